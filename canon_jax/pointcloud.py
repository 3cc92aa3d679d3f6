"""SO(3) / O(3) canonicalization of point clouds.

Conventions (tested in ``tests/test_pointcloud.py``):

* A batch of point clouds is ``points`` of shape (B, N, 3), float32, each point a
  row vector (x, y, z).
* A rotation ``Q`` acts on a cloud as ``points @ Q.T`` (Q applied to every point
  as a column vector).
* A frame is a (B, 3, 3) matrix ``R`` whose COLUMNS are the predicted orthonormal
  axes b1, b2, b3. It is equivariant: ``R(points @ Q.T) = Q @ R(points)``.
* The canonical cloud is ``(points - centroid) @ R`` (R^T applied to every point:
  the coordinates of each point in the predicted frame). It is invariant to
  rotations and translations of the input.

With ``group="SO3"`` (default) the frame is a proper rotation (det +1) built from two
predicted vectors by Gram-Schmidt and a cross product. With ``group="O3"`` three
vectors are orthonormalised by Gram-Schmidt, so the frame is also equivariant to
reflections (det R = det Q * det R(points) may be -1): the canonical cloud is then
invariant to all of O(3).
"""
from __future__ import annotations

from typing import Literal

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from canon_jax import _checks
from canon_jax.nn.vector_neurons import VNVectorNet

_NETWORKS = ("e3nn", "vn")
_GROUPS = ("SO3", "O3")


@flax.struct.dataclass
class PointCloudCanonicalization:
  """Output of :class:`PointCloudCanonicalizer` (a pytree).

  Attributes:
    rotation: (B, 3, 3) predicted frame R, axes as columns; a proper rotation
      (det +1) for ``group="SO3"``, orthogonal for ``group="O3"``.
      Equivariant: R(x @ Q.T + t) = Q @ R(x).
    canonical: (B, N, 3) the centred cloud in the predicted frame,
      ``(points - centroid) @ rotation``; invariant to rotations and translations.
    vectors: (B, V, 3) the raw predicted vectors (V = 2 for SO3, 3 for O3), row
      vectors in the input's axes (predicted from the centred cloud scaled to
      RMS radius 1); equivariant: v(x @ Q.T) = v(x) @ Q.T.
    centroid: (B, 3) mean of the points (the translation that was removed).
  """
  rotation: jax.Array
  canonical: jax.Array
  vectors: jax.Array
  centroid: jax.Array


def _safe_normalize(v: jax.Array, eps: float) -> jax.Array:
  return v / jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True) + eps * eps)


def frame_from_vectors(v1: jax.Array, v2: jax.Array, v3: jax.Array | None = None,
                       eps: float = 1e-8) -> jax.Array:
  """Orthonormal frame from predicted vectors by Gram-Schmidt.

  b1 = v1 / |v1|, b2 = normalised (v2 - <b1, v2> b1), and b3 = b1 x b2 when ``v3``
  is None (a proper rotation, det +1), otherwise b3 = normalised
  (v3 - <b1, v3> b1 - <b2, v3> b2) (an orthogonal matrix, det +1 or -1, equivariant
  to reflections too). Norms are smoothed as sqrt(|u|^2 + eps^2), which keeps the
  map differentiable (and NaN-free) at u = 0 and does not affect equivariance.

  Args:
    v1, v2, v3: (..., 3) vectors (row vectors in the input's coordinates).
    eps: smoothing of the norms.

  Returns:
    (..., 3, 3) matrix R = [b1 b2 b3] with the axes as COLUMNS, so that
    frame(v @ Q.T) = Q @ frame(v) and ``x @ R`` expresses points x in the frame.

  >>> import jax.numpy as jnp
  >>> frame_from_vectors(jnp.array([2., 0, 0]), jnp.array([1., 3, 0])).round(6)
  Array([[1., 0., 0.],
         [0., 1., 0.],
         [0., 0., 1.]], dtype=float32)
  """
  b1 = _safe_normalize(v1, eps)
  b2 = _safe_normalize(v2 - jnp.sum(b1 * v2, -1, keepdims=True) * b1, eps)
  if v3 is None:
    b3 = jnp.cross(b1, b2)
  else:
    u3 = (v3 - jnp.sum(b1 * v3, -1, keepdims=True) * b1
          - jnp.sum(b2 * v3, -1, keepdims=True) * b2)
    b3 = _safe_normalize(u3, eps)
  return jnp.stack([b1, b2, b3], axis=-1)


def knn_indices(points: jax.Array, k: int) -> jax.Array:
  """Indices of the k nearest neighbours of every point (the point itself first).

  Squared distances are computed from exact coordinate differences (not the
  |x|^2 + |y|^2 - 2 x.y expansion), so rotating the cloud does not reorder
  neighbours through rounding. Meant for low-dimensional coordinates (B, N, 3).

  Args:
    points: (B, N, D) coordinates.
    k: number of neighbours, 1 <= k <= N.

  Returns:
    (B, N, k) int32 indices into the N axis, nearest first (ties: lower index
    first, as ``lax.top_k``).
  """
  # Unrolled over the D coordinates: XLA on CPU runs this sum of (B, N, N)
  # elementwise terms ~10x faster than a reduction over a trailing size-3 axis.
  neg_d2 = -sum((points[:, :, None, d] - points[:, None, :, d]) ** 2
                for d in range(points.shape[-1]))
  return jax.lax.top_k(neg_d2, k)[1]


def check_points(points, name: str = "points", min_points: int = 1,
                 check_finite: bool | None = False) -> None:
  """Validates a (B, N, 3) float point cloud batch with N >= ``min_points``.

  Raises ValueError (rank, last axis, N, and NaN/Inf if ``check_finite``) or
  TypeError (dtype) naming ``name`` and stating the expected and actual values.
  The NaN/Inf check reads concrete arrays now; under jit, with
  ``check_finite=True``, it becomes a host callback that raises when the
  computation runs (``None``: concrete arrays only).
  """
  _checks.check_rank(points, name, 3, "B, N, 3: a batch of clouds of 3-D points")
  _checks.check_floating(points, name)
  if points.shape[-1] != 3:
    raise ValueError(
        f"{name} must have 3 coordinates on its last axis (B, N, 3); got shape "
        f"{tuple(points.shape)} with last axis {points.shape[-1]}.")
  if points.shape[1] < min_points:
    raise ValueError(
        f"{name} must have at least {min_points} points per cloud (N >= k, the "
        f"number of neighbours); got N={points.shape[1]} in shape "
        f"{tuple(points.shape)}.")
  _checks.check_finite(points, name, check_finite)


def canonicalize_points(points: jax.Array, rotation: jax.Array,
                        centroid: jax.Array | None = None) -> jax.Array:
  """(points - centroid) @ rotation: the cloud expressed in the frame.

  Args:
    points: (B, N, 3).
    rotation: (B, 3, 3) frame, axes as columns.
    centroid: (B, 3), default the mean over the points.

  Returns:
    (B, N, 3) canonical cloud.
  """
  if centroid is None:
    centroid = jnp.mean(points, axis=1)
  return jnp.einsum("bni,bij->bnj", points - centroid[:, None, :], rotation)


def to_input_frame(outputs: jax.Array, rotation: jax.Array) -> jax.Array:
  """Maps vectors predicted in the canonical frame back to the input's frame.

  For equivariant tasks: ``outputs @ rotation.T`` (R applied to each row vector),
  the inverse of the canonicalization, so the composed prediction is equivariant.

  Args:
    outputs: (B, ..., 3) vectors (rows) in canonical coordinates.
    rotation: (B, 3, 3) frame, axes as columns.

  Returns:
    (B, ..., 3) vectors in the input's coordinates.
  """
  return jnp.einsum("b...j,bij->b...i", outputs, rotation)


class PointCloudCanonicalizer(nn.Module):
  """Predicts an equivariant frame for each cloud and canonicalizes it.

  The cloud is centred, scaled by its RMS radius (an invariant), and given to an
  equivariant network with a kNN graph (computed here, on the centred cloud); the
  network returns V vectors per cloud (mean-pooled over the points), and
  :func:`frame_from_vectors` turns them into the frame.

  Call as ``module.apply(variables, points, train=...)``; with
  ``network="vn"`` and ``train=True`` pass ``mutable=["batch_stats"]`` (Vector
  Neuron batch norm); the e3nn network has no batch statistics.

  Attributes:
    network: "e3nn" (e3nn-jax message passing, :class:`E3nnVectorNet`) or "vn"
      (Vector Neurons, :class:`VNVectorNet`).
    group: "SO3" (proper rotations, two vectors) or "O3" (three vectors,
      reflection-equivariant frame).
    num_neighbors: k of the kNN graph (each point counts as its own neighbour).
    num_layers: message-passing layers (e3nn) or VN layers after the edge layer.
    channels: feature width; None = the network's default (e3nn 16 scalars,
      VN 21 vector channels as equiadapt's 64 // 3).
    pooling: VN only: "mean" or "max" (learned direction) over the neighbours.
    eps: smoothing of the norms in the Gram-Schmidt and the RMS scale.
    check_finite: raise ValueError on NaN/Inf points. ``None`` (default): eager
      calls check (notebooks, ``init``), traced ones do not, so a jitted training
      step carries no host callback; ``True``: also under jit (a host callback
      raises when the step runs); ``False``: never.
  """
  network: Literal["e3nn", "vn"] = "e3nn"
  group: Literal["SO3", "O3"] = "SO3"
  num_neighbors: int = 16
  num_layers: int = 3
  channels: int | None = None
  pooling: Literal["mean", "max"] = "mean"
  eps: float = 1e-8
  check_finite: bool | None = None

  @nn.compact
  def __call__(self, points: jax.Array, train: bool = False
               ) -> PointCloudCanonicalization:
    """Args: points (B, N, 3) float; train: batch statistics (VN) or not.

    Returns: a :class:`PointCloudCanonicalization`.
    """
    if self.network not in _NETWORKS:
      raise ValueError(f"network must be one of {_NETWORKS}; got {self.network!r}.")
    if self.group not in _GROUPS:
      raise ValueError(f"group must be one of {_GROUPS}; got {self.group!r}.")
    check_points(points, "points", min_points=self.num_neighbors,
                 check_finite=self.check_finite)

    centroid = jnp.mean(points, axis=1)
    centred = points - centroid[:, None, :]
    rms = jnp.sqrt(jnp.mean(jnp.sum(centred * centred, -1), -1) + self.eps ** 2)
    scaled = centred / rms[:, None, None]
    neighbors = knn_indices(centred, self.num_neighbors)  # same as on `scaled`

    num_vectors = 2 if self.group == "SO3" else 3
    if self.network == "e3nn":
      # Imported here: e3nn-jax (and scipy.signal) take ~2 s to import.
      from canon_jax.nn.e3nn_net import E3nnVectorNet  # pylint: disable=import-outside-toplevel
      net = E3nnVectorNet(num_vectors=num_vectors, num_layers=self.num_layers,
                          channels=self.channels or 16, name="net")
      vectors = net(scaled, neighbors)
    else:
      net = VNVectorNet(num_vectors=num_vectors, num_layers=self.num_layers,
                        channels=self.channels or 21, pooling=self.pooling,
                        use_cross=self.group == "SO3", name="net")
      vectors = net(scaled, neighbors, train=train)

    rotation = frame_from_vectors(*(vectors[:, i] for i in range(num_vectors)),
                                  eps=self.eps)
    canonical = canonicalize_points(points, rotation, centroid)
    return PointCloudCanonicalization(rotation=rotation, canonical=canonical,
                                      vectors=vectors, centroid=centroid)
