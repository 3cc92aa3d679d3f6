"""E(3) canonicalization for n-body dynamics: equivariant predictions of future positions
from a non-equivariant predictor.

Layout: a batch of systems is ``particles`` (B, n, 7), each row
[x, y, z, vx, vy, vz, q] (position, velocity, charge; see
:func:`canon_jax.data.nbody.pack_particles`). A Euclidean motion (Q, t), Q in SO(3)
and t in R^3, acts as x -> x Q^T + t, v -> v Q^T, q -> q (rows).

:class:`NBodyCanonicalizer` predicts a frame R(particles) (axes as columns,
det +1) with ``R(g . p) = Q R(p)`` and takes the centroid of the positions as the
translation; the canonical system is ((x - c) R, v R, q), invariant to (Q, t).
:class:`NBodyModel` runs a predictor (e.g. :class:`NBodyMLP`, which knows nothing
of symmetry) on the canonical system and maps its predicted positions back,
``y R^T + c``, so that the whole model is E(3)-equivariant:
``f(g . p) = f(p) Q^T + t``. Without a canonicalizer :class:`NBodyModel` is the
plain predictor on the raw input (the baseline).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from canon_jax.model import CanonicalizedOutput, canonicalization_prior
from canon_jax.nn.vector_neurons import VNLeakyReLU, VNLinear
from canon_jax.pointcloud import PointCloudCanonicalization, frame_from_vectors

PARTICLE_WIDTH = 7


def check_particles(particles, name: str = "particles") -> None:
  """Raises ValueError unless ``particles`` is (B, n, 7) with n >= 2."""
  shape = tuple(getattr(particles, "shape", ()))
  if len(shape) != 3 or shape[-1] != PARTICLE_WIDTH or shape[1] < 2:
    raise ValueError(f"{name} must have shape (B, n, 7), rows [x, y, z, vx, vy, vz, q], "
                     f"with n >= 2; got shape {shape}.")


def transform_particles(particles: jax.Array, rotation: jax.Array,
                        translation: jax.Array | None = None) -> jax.Array:
  """Applies (Q, t) per system: x Q^T + t, v Q^T, q unchanged.

  Args:
    particles: (B, n, 7).
    rotation: (B, 3, 3) Q.
    translation: (B, 3) t, or None for none.

  Returns:
    (B, n, 7).
  """
  rotation = rotation.astype(particles.dtype)
  loc = jnp.einsum("bnj,bij->bni", particles[..., :3], rotation)
  if translation is not None:
    loc = loc + translation[:, None, :].astype(particles.dtype)
  vel = jnp.einsum("bnj,bij->bni", particles[..., 3:6], rotation)
  return jnp.concatenate([loc, vel, particles[..., 6:]], axis=-1)


class NBodyVectorNet(nn.Module):
  """Vector Neurons on the complete graph of the particles -> vectors per system.

  Edge (i, j) carries the vector channels [x_j - x_i, x_i - c, v_i, v_j,
  q_i q_j (x_j - x_i), q_i v_i] (c the centroid; charges enter by multiplying
  vectors, which keeps every channel equivariant); a VN linear + leaky ReLU layer
  and the mean over j give per-particle features, ``num_layers - 1`` VN layers
  follow (each with the mean over the particles appended as a channel block),
  and a VNLinear readout averaged over the particles gives the vectors. No batch
  norm, no dropout.

  Attributes:
    num_vectors: vectors per system.
    channels: vector channels.
    num_layers: VN layers (the first on the edges).
    negative_slope: of the VN leaky ReLUs.
  """
  num_vectors: int = 2
  channels: int = 16
  num_layers: int = 3
  negative_slope: float = 0.2

  @nn.compact
  def __call__(self, particles: jax.Array) -> jax.Array:
    """(B, n, 7) -> (B, num_vectors, 3) rows, f(g . p) = f(p) Q^T."""
    loc, vel, q = particles[..., :3], particles[..., 3:6], particles[..., 6:]
    centred = loc - jnp.mean(loc, axis=1, keepdims=True)
    rel = centred[:, None, :, :] - centred[:, :, None, :]            # (B, i, j, 3)
    shape = rel.shape
    qq = q[:, :, None, :] * q[:, None, :, :]                          # (B, i, j, 1)
    channels = [rel, jnp.broadcast_to(centred[:, :, None], shape),
                jnp.broadcast_to(vel[:, :, None], shape),
                jnp.broadcast_to(vel[:, None, :], shape), qq * rel,
                jnp.broadcast_to((q * vel)[:, :, None], shape)]
    v = jnp.stack(channels, axis=-1)                                  # (B, i, j, 3, C0)
    v = VNLeakyReLU(self.negative_slope, name="edge_act")(
        VNLinear(self.channels, name="edge")(v))
    v = jnp.mean(v, axis=2)                                           # (B, n, 3, C)
    for layer in range(1, self.num_layers):
      pooled = jnp.broadcast_to(jnp.mean(v, axis=1, keepdims=True), v.shape)
      v = VNLinear(self.channels, name=f"linear_{layer}")(
          jnp.concatenate([v, pooled], axis=-1))
      v = VNLeakyReLU(self.negative_slope, name=f"act_{layer}")(v)
    v = VNLinear(self.num_vectors, name="readout")(v)                # (B, n, 3, V)
    return jnp.swapaxes(jnp.mean(v, axis=1), -1, -2)


class NBodyCanonicalizer(nn.Module):
  """E(3) canonicalizer of particle systems (translation: centroid; rotation: VN frame).

  Returns a :class:`canon_jax.PointCloudCanonicalization` whose ``canonical`` is the
  canonical system (B, n, 7) ((x - c) R, v R, q), ``rotation`` the frame R
  (B, 3, 3) (det +1, ``R(g . p) = Q R(p)``), ``vectors`` the two predicted vectors,
  ``centroid`` c (B, 3). Call as ``module.apply(variables, particles)``.

  Attributes: those of :class:`NBodyVectorNet` (``channels``, ``num_layers``,
  ``negative_slope``), and ``eps``, the norm smoothing of the Gram-Schmidt.
  """
  channels: int = 16
  num_layers: int = 3
  negative_slope: float = 0.2
  eps: float = 1e-8

  @nn.compact
  def __call__(self, particles: jax.Array, train: bool = False
               ) -> PointCloudCanonicalization:
    del train  # no batch statistics, no dropout
    check_particles(particles)
    vectors = NBodyVectorNet(2, self.channels, self.num_layers, self.negative_slope,
                             name="net")(particles)
    rotation = frame_from_vectors(vectors[:, 0], vectors[:, 1], eps=self.eps)
    centroid = jnp.mean(particles[..., :3], axis=1)
    # (x - c) R = x R - c R, v R: the motion (R^T, -c R).
    canonical = transform_particles(particles, jnp.swapaxes(rotation, -1, -2),
                                    -jnp.einsum("bi,bij->bj", centroid, rotation))
    return PointCloudCanonicalization(rotation=rotation, canonical=canonical,
                                      vectors=vectors, centroid=centroid)


class NBodyMLP(nn.Module):
  """A plain MLP predicting future positions: (B, n, 7) -> (B, n, 3).

  The flattened system (n * 7 numbers) goes through ``hidden`` dense layers with
  SiLU; the output (n * 3) is a displacement added to the input positions
  (columns 0-2). Not equivariant to anything.

  Attributes:
    hidden: widths of the hidden layers.
    num_classes: outputs per particle (3); named as the other predictors' field so
      the training system can build it the same way.
  """
  hidden: Sequence[int] = (128, 128)
  num_classes: int = 3

  @nn.compact
  def __call__(self, particles: jax.Array, train: bool = False) -> jax.Array:
    del train
    check_particles(particles)
    b, n, _ = particles.shape
    h = particles.reshape(b, -1)
    for width in self.hidden:
      h = nn.silu(nn.Dense(width)(h))
    delta = nn.Dense(n * self.num_classes)(h).reshape(b, n, self.num_classes)
    return particles[..., :self.num_classes] + delta


class NBodyModel(nn.Module):
  """Canonicalizer (optional) + predictor of future positions, mapped back to the input.

  ``apply(variables, particles)`` returns a :class:`canon_jax.CanonicalizedOutput`
  whose ``predictions`` are (B, n, 3) positions in the input's frame: with a
  canonicalizer, ``predictor(canonical) R^T + c`` (E(3)-equivariant); without,
  ``predictor(particles)``. ``prior`` is :func:`canon_jax.canonicalization_prior`
  of the frame (towards ``prior_target`` (B, 3, 3) rotations, or the identity), 0
  without canonicalizer; ``auxiliary`` is 0. Same call signature as
  :class:`canon_jax.CanonicalizedModel`, so the training system runs both.

  Attributes:
    predictor: a module ``predictor(particles (B, n, 7), train=...) -> (B, n, 3)``.
    canonicalizer: :class:`NBodyCanonicalizer` or None.
    freeze_predictor: run the predictor in inference mode always.
  """
  predictor: nn.Module
  canonicalizer: nn.Module | None = None
  freeze_predictor: bool = False

  @nn.compact
  def __call__(self, particles: jax.Array, train: bool = False,
               prior_target: jax.Array | None = None) -> CanonicalizedOutput:
    check_particles(particles)
    zero = jnp.zeros((), jnp.float32)
    result, prior, inputs = None, zero, particles
    if self.canonicalizer is not None:
      result = self.canonicalizer(particles, train=train)
      prior = canonicalization_prior(result, prior_target)
      inputs = result.canonical
    predictions = self.predictor(inputs, train=train and not self.freeze_predictor)
    if result is not None:
      predictions = (jnp.einsum("bnj,bij->bni", predictions, result.rotation)
                     + result.centroid[:, None, :])
    return CanonicalizedOutput(predictions=predictions, canonicalization=result,
                               prior=prior, auxiliary=zero)
