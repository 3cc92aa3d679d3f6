"""Vector Neurons (Deng et al., "Vector Neurons: A General Framework for
SO(3)-Equivariant Networks", ICCV 2021), in plain jnp.

Layout: vector features are arrays (..., 3, C), channels last: C channels, each a
3-D vector whose (x, y, z) components lie on axis -2 (so a VN linear layer is one
plain matmul over the last axis; with the PyTorch code's (..., C, 3) layout, VN
linear layers and norms ran 4-5x slower on a CPU, a training step 1.7x). A rotation
Q acts on every channel as Q @ v (v[..., :, c] a column vector), and every layer here
commutes with it: f(Q v) = Q f(v). Except
for the cross-product edge feature (optional), the layers also commute with
reflections.

Layers: :class:`VNLinear` (mixing channels, no bias), :class:`VNBatchNorm`
(batch norm of the channel norms), :class:`VNLeakyReLU` (leaky ReLU about a
learned direction), :class:`VNMaxPool` (max along a learned direction) and
:func:`vn_mean_pool`. No ordinary dropout is ever applied to vector features (it
would break equivariance in training, a defect of the reference's canonicalizer).
"""
from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from canon_jax import _checks
from canon_jax.nn.conv import pointwise

_EPS = 1e-6


def _gather(features: jax.Array, neighbors: jax.Array) -> jax.Array:
  """(B, N, ...) features, (B, N, k) indices -> (B, N, k, ...) neighbour features."""
  return jax.vmap(lambda f, i: f[i])(features, neighbors)


def vn_norm(v: jax.Array, eps: float = _EPS) -> jax.Array:
  """(..., 3, C) -> (..., C) channel norms, smoothed as sqrt(|v|^2 + eps^2)."""
  return jnp.sqrt(jnp.sum(v * v, axis=-2) + eps * eps)


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
  """Channelwise inner products: (..., 3, C) x (..., 3, C) -> (..., 1, C)."""
  return jnp.sum(a * b, axis=-2, keepdims=True)


def vn_mean_pool(v: jax.Array, axis: int) -> jax.Array:
  """Mean of vector features over ``axis`` (an axis before the last two)."""
  return jnp.mean(v, axis=axis)


class VNLinear(nn.Module):
  """Mixes channels, v' = v W: (..., 3, C_in) -> (..., 3, features), no bias."""
  features: int

  @nn.compact
  def __call__(self, v: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (v.shape[-1], self.features), v.dtype)
    return pointwise(v, kernel)   # (..., C_in, 3) -> (..., C_out, 3): mixes channels


class VNBatchNorm(nn.Module):
  """Batch norm of the channel norms; directions are kept.

  v' = v * BN(|v|) / |v| with statistics over every axis but the channel axis
  (batch, points, neighbours). Norms are invariant, so the layer is equivariant
  in training and evaluation alike. Momentum 0.9 (Flax; = torch 0.1), eps 1e-5.
  """
  momentum: float = 0.9
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, v: jax.Array, train: bool) -> jax.Array:
    norm = vn_norm(v)
    normed = nn.BatchNorm(use_running_average=not train, momentum=self.momentum,
                          epsilon=self.epsilon, name="bn")(norm)
    return v * (normed / norm)[..., None, :]


class VNLeakyReLU(nn.Module):
  """Leaky ReLU about a learned direction.

  With q the input and d = U q a learned direction (one per channel, or one
  shared by all channels), the ReLU keeps q where <q, d> >= 0 and otherwise removes
  its component along d: q - <q, d> / |d|^2 d. The leaky version returns
  ``negative_slope * q + (1 - negative_slope) * relu(q)``.
  """
  negative_slope: float = 0.0
  share_direction: bool = False

  @nn.compact
  def __call__(self, q: jax.Array) -> jax.Array:
    d = VNLinear(1 if self.share_direction else q.shape[-1], name="direction")(q)
    dot = _dot(q, d)
    relu = jnp.where(dot >= 0, q, q - (dot / (_dot(d, d) + _EPS)) * d)
    return self.negative_slope * q + (1.0 - self.negative_slope) * relu


class VNLinearBNLeakyReLU(nn.Module):
  """VNLinear -> VNBatchNorm -> VNLeakyReLU, (..., 3, C_in) -> (..., 3, features)."""
  features: int
  negative_slope: float = 0.0

  @nn.compact
  def __call__(self, v: jax.Array, train: bool) -> jax.Array:
    v = VNLinear(self.features, name="linear")(v)
    v = VNBatchNorm(name="norm")(v, train)
    return VNLeakyReLU(self.negative_slope, name="act")(v)


class VNMaxPool(nn.Module):
  """Max pooling along a learned direction.

  For every channel, picks along ``axis`` the entry whose feature has the largest
  projection <v, d> on the learned direction d = v W: (..., P, ..., 3, C) ->
  (..., ..., 3, C). Equivariant, since the projections are invariant.

  As in the paper, the selection is an argmax: no gradient reaches the direction
  layer's kernel, which stays at its (random) initial value.
  """
  axis: int

  @nn.compact
  def __call__(self, v: jax.Array) -> jax.Array:
    d = VNLinear(v.shape[-1], name="direction")(v)
    best = jnp.argmax(_dot(v, d), axis=self.axis, keepdims=True)  # (.., 1, .., 1, C)
    return jnp.squeeze(jnp.take_along_axis(v, best, axis=self.axis), self.axis)


class VNVectorNet(nn.Module):
  """A small VN-DGCNN-style network predicting vectors (equiadapt's VN
  canonicalizer, without its dropout).

  Edge features for each point i and neighbour j are the vector channels
  [x_j - x_i, x_i] plus, if ``use_cross``, x_j x x_i (SO(3)- but not
  reflection-equivariant); a VN linear-BN-ReLU layer and pooling over the
  neighbours give per-point features, ``num_layers - 1`` more VN layers follow, a
  VNLinear reads out ``num_vectors`` channels, and the mean over the points gives
  the vectors.

  Attributes:
    num_vectors: vectors predicted per cloud.
    num_layers: VN linear-BN-ReLU layers (the first acts on the edges).
    channels: vector channels (equiadapt: 64 // 3 = 21).
    pooling: "mean" or "max" (learned direction) over the neighbours.
    use_cross: include the cross-product edge channel.
    negative_slope: of the VN leaky ReLUs (equiadapt's canonicalizer: 0).
  """
  num_vectors: int = 2
  num_layers: int = 3
  channels: int = 21
  pooling: Literal["mean", "max"] = "mean"
  use_cross: bool = True
  negative_slope: float = 0.0

  @nn.compact
  def __call__(self, points: jax.Array, neighbors: jax.Array,
               train: bool = False) -> jax.Array:
    """Predicts vectors.

    Args:
      points: (B, N, 3) centred cloud.
      neighbors: (B, N, k) int indices of each point's neighbours.
      train: use batch statistics (and update ``batch_stats``) in VN batch norm.

    Returns:
      (B, num_vectors, 3) vectors, xyz rows; f(points @ Q.T) = f(points) @ Q.T.
    """
    _checks.check_choice(self.pooling, "pooling", ("mean", "max"))
    x_j = _gather(points, neighbors)                     # (B, N, k, 3)
    x_i = jnp.broadcast_to(points[:, :, None, :], x_j.shape)
    channels = [x_j - x_i, x_i]
    if self.use_cross:
      channels.append(jnp.cross(x_j, x_i))
    v = jnp.stack(channels, axis=-1)                     # (B, N, k, 3, C0)

    v = VNLinearBNLeakyReLU(self.channels, self.negative_slope, name="edge")(v, train)
    if self.pooling == "max":
      v = VNMaxPool(axis=2, name="edge_pool")(v)
    else:
      v = vn_mean_pool(v, axis=2)                        # (B, N, 3, C)
    for layer in range(1, self.num_layers):
      v = VNLinearBNLeakyReLU(self.channels, self.negative_slope,
                              name=f"layer_{layer}")(v, train)
    v = VNLinear(self.num_vectors, name="readout")(v)    # (B, N, 3, V)
    return jnp.swapaxes(vn_mean_pool(v, axis=1), -1, -2)
