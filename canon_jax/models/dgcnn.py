"""DGCNN classifier (Wang et al., "Dynamic Graph CNN for Learning on Point Clouds",
ACM TOG 2019).

EdgeConv layers 64-64-128-256 on a kNN graph (k = 20) recomputed in each layer's
input feature space: for point i and neighbour j the edge feature is
[h_j - h_i, h_i], followed by a dense layer (no bias), batch norm and
LeakyReLU(0.2), then a max over the k neighbours. The four layers' outputs are
concatenated (512), embedded to 1024 (dense + BN + LeakyReLU), max- and
mean-pooled over the points (2048), and classified by 512-256 fully connected
layers with BN, LeakyReLU and dropout 0.5.

Input (B, N, 3) float32 points; output (B, num_classes) logits. Batch norm:
momentum 0.9 (= torch 0.1), eps 1e-5; in training call
``apply(..., train=True, mutable=["batch_stats"], rngs={"dropout": key})``.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from canon_jax import pointcloud


def _feature_knn(features: jax.Array, k: int) -> jax.Array:
  """(B, N, D) -> (B, N, k) nearest neighbours in feature space (self first).

  Uses |a|^2 + |b|^2 - 2 a.b (one matmul), as DGCNN does, since D is up to 256.
  """
  sq = jnp.sum(features * features, axis=-1)
  d2 = sq[:, :, None] + sq[:, None, :] - 2.0 * jnp.einsum(
      "bnd,bmd->bnm", features, features)
  return jax.lax.top_k(-d2, k)[1]


def edge_conv_features(points: jax.Array, features: Sequence[int], embedding: int,
                       num_neighbors: int, norm, act) -> tuple[jax.Array, jax.Array]:
  """DGCNN's EdgeConv stack, called inside a compact module (it creates the layers).

  Each layer: kNN in the current feature space, edge features ``[h_j - h_i, h_i]``,
  a bias-free Dense, ``norm()``, ``act``, max over the k neighbours. Returns
  ``(local, embedded)``: the layers' outputs concatenated (B, N, sum(features)) and
  their bias-free Dense embedding (B, N, embedding) after ``norm()`` and ``act``.
  """
  h, outputs = points, []
  for width in features:
    neighbors = _feature_knn(h, num_neighbors)
    h_j = jax.vmap(lambda f, i: f[i])(h, neighbors)          # (B, N, k, D)
    h_i = jnp.broadcast_to(h[:, :, None, :], h_j.shape)
    edges = jnp.concatenate([h_j - h_i, h_i], axis=-1)
    h = jnp.max(act(norm()(nn.Dense(width, use_bias=False)(edges))), axis=2)
    outputs.append(h)
  local = jnp.concatenate(outputs, axis=-1)
  return local, act(norm()(nn.Dense(embedding, use_bias=False)(local)))


class DGCNN(nn.Module):
  """DGCNN classifier.

  Attributes:
    num_classes: number of logits (ModelNet40: 40).
    num_neighbors: k of the dynamic kNN graphs (the point itself included).
    features: widths of the EdgeConv layers.
    embedding: width of the per-point embedding before the global pools.
    head: widths of the hidden fully connected layers.
    dropout_rate: dropout after each hidden fully connected layer (training only).
    negative_slope: of the LeakyReLUs.
  """
  num_classes: int = 40
  num_neighbors: int = 20
  features: Sequence[int] = (64, 64, 128, 256)
  embedding: int = 1024
  head: Sequence[int] = (512, 256)
  dropout_rate: float = 0.5
  negative_slope: float = 0.2

  def _edge_convs(self, points: jax.Array, train: bool):
    """``(local, embedded, norm, act)``: the checked input through
    :func:`edge_conv_features`, and the batch norm and activation of the layers."""
    pointcloud.check_points(points, "points", min_points=self.num_neighbors)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5)
    act = functools.partial(nn.leaky_relu, negative_slope=self.negative_slope)
    local, embedded = edge_conv_features(points, self.features, self.embedding,
                                         self.num_neighbors, norm, act)
    return local, embedded, norm, act

  @nn.compact
  def __call__(self, points: jax.Array, train: bool = False) -> jax.Array:
    """(B, N, 3) points -> (B, num_classes) logits."""
    _, h, norm, act = self._edge_convs(points, train)
    x = jnp.concatenate([jnp.max(h, axis=1), jnp.mean(h, axis=1)], axis=-1)
    for i, width in enumerate(self.head):
      x = act(norm()(nn.Dense(width, use_bias=i > 0)(x)))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


# A DGCNN with a few thousand parameters for tests (same layout, narrow widths).
DGCNNTiny = functools.partial(DGCNN, num_neighbors=8, features=(8, 8, 16),
                              embedding=32, head=(16,))
