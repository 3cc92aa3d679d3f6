"""Point clouds sampled on the surfaces of primitive and composite shapes.

A small ModelNet-like classification set the project generates itself (no
download): ten classes, several of them with one distinguished orientation, so that
rotating the test set hurts a predictor trained upright.

Every sample: class-specific random shape parameters, points uniform on the
surface (by area; parts of a composite are sampled by their areas and their
overlapping or hidden faces are not removed), an anisotropic scale per axis in
[0.8, 1.2], centring (mean 0), scaling to unit maximum radius, and Gaussian jitter
(sigma 0.01, clipped at 0.05), as in the ModelNet40 HDF5 release. Shapes stand
upright along +z. Generation is deterministic in ``seed`` (sample i of class c
depends only on (seed, c, i)).

Also here: random rotations for augmentation (:func:`rotate_point_clouds`) and the
TFDS builder ``canon_shapes`` (array_record, needs no TensorFlow).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from canon_jax import pointcloud
from canon_jax.data.array_record import SyntheticBuilder

CLASS_NAMES = ("sphere", "box", "cylinder", "cone", "torus", "ell", "mug", "chair",
               "arrow", "table")

_Sampler = Callable[[np.random.Generator, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class _Part:
  """A surface: its area and a sampler (rng, n) -> (n, 3) uniform points."""
  area: float
  sample: _Sampler


def _placed(part: _Part, offset=(0.0, 0.0, 0.0), rotation=None) -> _Part:
  """The part rotated (points @ rotation.T) and then moved by ``offset``."""
  rot = np.eye(3) if rotation is None else np.asarray(rotation)
  return _Part(part.area,
               lambda rng, n: part.sample(rng, n) @ rot.T + np.asarray(offset))


def _about_x(angle: float) -> np.ndarray:
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_z(angle: float) -> np.ndarray:
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _disk(rng, n, radius, z):
  r = radius * np.sqrt(rng.uniform(size=n))
  t = rng.uniform(0.0, 2 * np.pi, n)
  return np.stack([r * np.cos(t), r * np.sin(t), np.full(n, z)], axis=-1)


def _sphere(radius: float) -> _Part:
  def sample(rng, n):
    v = rng.normal(size=(n, 3))
    return radius * v / np.linalg.norm(v, axis=-1, keepdims=True)
  return _Part(4 * np.pi * radius ** 2, sample)


def _box(half) -> _Part:
  """Closed box with half extents ``half`` = (a, b, c), centred at 0."""
  half = np.asarray(half, dtype=np.float64)
  face_areas = 4 * np.array([half[1] * half[2], half[0] * half[2],
                             half[0] * half[1]])   # one face normal to x, y, z

  def sample(rng, n):
    axis = rng.choice(3, size=n, p=face_areas / face_areas.sum())
    pts = rng.uniform(-1.0, 1.0, size=(n, 3))
    pts[np.arange(n), axis] = rng.choice([-1.0, 1.0], size=n)
    return pts * half
  return _Part(2 * face_areas.sum(), sample)


def _cylinder(radius: float, height: float, bottom: bool = True,
              top: bool = True) -> _Part:
  """Cylinder along z, z in [-height/2, height/2], with optional end caps."""
  areas = np.array([2 * np.pi * radius * height, np.pi * radius ** 2 * bottom,
                    np.pi * radius ** 2 * top])

  def sample(rng, n):
    counts = rng.multinomial(n, areas / areas.sum())
    t = rng.uniform(0.0, 2 * np.pi, counts[0])
    side = np.stack([radius * np.cos(t), radius * np.sin(t),
                     rng.uniform(-height / 2, height / 2, counts[0])], axis=-1)
    return np.concatenate([side, _disk(rng, counts[1], radius, -height / 2),
                           _disk(rng, counts[2], radius, height / 2)])
  return _Part(areas.sum(), sample)


def _cone(radius: float, height: float) -> _Part:
  """Closed cone along z: base disk at z = -height/2, apex at z = +height/2."""
  areas = np.array([np.pi * radius * np.hypot(radius, height), np.pi * radius ** 2])

  def sample(rng, n):
    counts = rng.multinomial(n, areas / areas.sum())
    frac = np.sqrt(rng.uniform(size=counts[0]))  # distance from the apex: area ~ t
    t = rng.uniform(0.0, 2 * np.pi, counts[0])
    side = np.stack([frac * radius * np.cos(t), frac * radius * np.sin(t),
                     height / 2 - frac * height], axis=-1)
    return np.concatenate([side, _disk(rng, counts[1], radius, -height / 2)])
  return _Part(areas.sum(), sample)


def _torus(major: float, minor: float, arc: float = 2 * np.pi) -> _Part:
  """Torus about the z axis (tube centre circle of radius ``major`` in the xy
  plane), restricted to azimuths [0, arc) (open ends for arc < 2 pi)."""
  def sample(rng, n):
    phi = np.empty(0)
    while phi.size < n:  # tube angle: density ~ (major + minor cos phi)
      cand = rng.uniform(0.0, 2 * np.pi, 2 * n)
      keep = rng.uniform(size=2 * n) * (major + minor) < major + minor * np.cos(cand)
      phi = np.concatenate([phi, cand[keep]])
    phi = phi[:n]
    theta = rng.uniform(0.0, arc, n)
    ring = major + minor * np.cos(phi)
    return np.stack([ring * np.cos(theta), ring * np.sin(theta),
                     minor * np.sin(phi)], axis=-1)
  return _Part(2 * np.pi * minor * major * arc, sample)


def _legs(half_width, half_depth, length, z_top, thickness) -> list[_Part]:
  """Four vertical box legs under a rectangle, hanging down from ``z_top``."""
  leg = _box((thickness, thickness, length / 2))
  return [_placed(leg, (sx * (half_width - thickness), sy * (half_depth - thickness),
                        z_top - length / 2))
          for sx in (-1, 1) for sy in (-1, 1)]


def _shape_parts(name: str, rng: np.random.Generator) -> list[_Part]:
  """Parts of one random instance of class ``name`` (upright along +z)."""
  u = rng.uniform
  if name == "sphere":
    return [_sphere(1.0)]
  if name == "box":
    return [_box(u(0.4, 1.0, 3))]
  if name == "cylinder":
    return [_cylinder(u(0.3, 0.6), u(1.2, 2.0))]
  if name == "cone":
    return [_cone(u(0.4, 0.7), u(1.0, 1.8))]
  if name == "torus":
    return [_torus(u(0.7, 0.9), u(0.15, 0.3))]
  if name == "ell":  # vertical bar on the -x end of a horizontal bar (xz plane)
    t, length, height = u(0.1, 0.2), u(0.8, 1.2), u(1.0, 1.6)
    return [_placed(_box((length / 2, t, t)), (0.0, 0.0, t)),
            _placed(_box((t, t, height / 2)), (-length / 2 + t, 0.0, height / 2))]
  if name == "mug":  # open-top cylinder, handle: half torus in the xz plane at +x
    r, h = u(0.4, 0.55), u(0.9, 1.3)
    handle = _torus(u(0.22, 0.3), u(0.04, 0.07), arc=np.pi)
    return [_cylinder(r, h, top=False),
            _placed(handle, (r, 0.0, 0.0),
                    rotation=_about_x(np.pi / 2) @ _rot_z(-np.pi / 2))]
  if name == "chair":  # seat, backrest at -y, four legs
    w, d, seat_z = u(0.4, 0.55), u(0.4, 0.55), u(0.5, 0.8)
    back_h, t = u(0.6, 1.0), 0.04
    return ([_placed(_box((w, d, t)), (0.0, 0.0, seat_z)),
             _placed(_box((w, t, back_h / 2)), (0.0, -d + t, seat_z + back_h / 2))]
            + _legs(w, d, seat_z, seat_z, t))
  if name == "arrow":  # shaft along +z with the head on top
    shaft_h, head_h = u(1.2, 1.6), u(0.4, 0.6)
    return [_cylinder(u(0.06, 0.1), shaft_h),
            _placed(_cone(u(0.2, 0.3), head_h), (0.0, 0.0, (shaft_h + head_h) / 2))]
  if name == "table":  # wide thin top, four legs
    w, d, top_z, t = u(0.7, 1.0), u(0.4, 0.7), u(0.6, 0.9), 0.05
    return [_placed(_box((w, d, t)), (0.0, 0.0, top_z))] + _legs(w, d, top_z,
                                                                  top_z, t)
  raise ValueError(f"class name must be one of {CLASS_NAMES}; got {name!r}.")


def sample_shape(name: str, num_points: int, rng: np.random.Generator) -> np.ndarray:
  """One normalised, jittered cloud of class ``name``: (num_points, 3) float32."""
  parts = _shape_parts(name, rng)
  areas = np.array([p.area for p in parts])
  counts = rng.multinomial(num_points, areas / areas.sum())
  pts = np.concatenate([p.sample(rng, c) for p, c in zip(parts, counts)])
  pts = pts[rng.permutation(num_points)] * rng.uniform(0.8, 1.2, 3)
  pts = pts - pts.mean(axis=0)
  pts = pts / np.linalg.norm(pts, axis=-1).max()
  pts = pts + np.clip(rng.normal(0.0, 0.01, pts.shape), -0.05, 0.05)
  return pts.astype(np.float32)


def make_shapes(num_per_class: int, num_points: int, seed: int
                ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """Generates the shapes data set.

  Args:
    num_per_class: samples per class.
    num_points: points per cloud.
    seed: integer seed; the output is a deterministic function of the arguments.

  Returns:
    points: (M, num_points, 3) float32, M = num_per_class * len(CLASS_NAMES),
      upright (+z up), centred, max radius about 1.
    labels: (M,) int32 indices into ``class_names``.
    class_names: the tuple of class names (``CLASS_NAMES``).
    Samples are shuffled by a permutation fixed by ``seed``.
  """
  if num_per_class < 1 or num_points < 1:
    raise ValueError("num_per_class and num_points must be >= 1; got "
                     f"num_per_class={num_per_class}, num_points={num_points}.")
  points = np.stack([
      sample_shape(name, num_points, np.random.default_rng([seed, c, i]))
      for c, name in enumerate(CLASS_NAMES) for i in range(num_per_class)])
  labels = np.repeat(np.arange(len(CLASS_NAMES), dtype=np.int32), num_per_class)
  order = np.random.default_rng([seed, len(CLASS_NAMES)]).permutation(len(labels))
  return points[order], labels[order], CLASS_NAMES


def random_rotations(rng: jax.Array, batch: int,
                     mode: Literal["none", "z", "so3"], up_axis: int = 2
                     ) -> jax.Array:
  """(batch, 3, 3) random rotations acting on row vectors as ``x @ Q.T``.

  Args:
    rng: a JAX PRNG key.
    batch: number of rotations.
    mode: "none" (identities), "z" (about the vertical axis ``up_axis`` by a
      uniform angle in [0, 2 pi)) or "so3" (Haar-uniform on SO(3), from normalised
      Gaussian quaternions).
    up_axis: the vertical axis for mode "z": 2 (z, as :func:`make_shapes`) or
      1 (y, as the ModelNet40 HDF5 release).
  """
  if mode == "none":
    return jnp.broadcast_to(jnp.eye(3), (batch, 3, 3))
  if mode == "z":
    if up_axis not in (0, 1, 2):
      raise ValueError(f"up_axis must be 0, 1 or 2; got {up_axis!r}.")
    angle = jax.random.uniform(rng, (batch,), maxval=2 * jnp.pi)
    c, s, zero, one = jnp.cos(angle), jnp.sin(angle), jnp.zeros(batch), jnp.ones(batch)
    about_z = jnp.stack([jnp.stack([c, -s, zero], -1), jnp.stack([s, c, zero], -1),
                         jnp.stack([zero, zero, one], -1)], axis=-2)
    # Cyclic relabelling of the axes (a proper rotation) sending z to up_axis.
    perm = np.zeros((3, 3))
    perm[[(up_axis + 1) % 3, (up_axis + 2) % 3, up_axis], [0, 1, 2]] = 1.0
    return jnp.asarray(perm) @ about_z @ jnp.asarray(perm.T)
  if mode == "so3":
    q = jax.random.normal(rng, (batch, 4))
    w, x, y, z = jnp.moveaxis(q / jnp.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
    return jnp.stack([
        jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        jnp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], axis=-2)
  raise ValueError(f"mode must be 'none', 'z' or 'so3'; got {mode!r}.")


def rotate_point_clouds(points: jax.Array, mode: Literal["none", "z", "so3"],
                        rng: jax.Array, up_axis: int = 2) -> jax.Array:
  """Rotates each cloud by its own random rotation (augmentation / test poses).

  Train and test modes are chosen independently (z/z, z/SO3, SO3/SO3 protocols).
  Pure and jittable (``mode`` and ``up_axis`` static).

  Args:
    points: (B, N, 3) clouds, rows (x, y, z).
    mode: "none", "z" (about the vertical axis) or "so3" (uniform).
    rng: a JAX PRNG key.
    up_axis: the vertical axis for mode "z" (2: z; ModelNet40 HDF5: 1, y).

  Returns:
    (B, N, 3) ``points[b] @ Q[b].T`` with
    Q = ``random_rotations(rng, B, mode, up_axis)``.
  """
  pointcloud.check_points(points, "points")
  rotations = random_rotations(rng, points.shape[0], mode, up_axis)
  return jnp.einsum("bnj,bij->bni", points, rotations.astype(points.dtype))


@dataclasses.dataclass
class CanonShapesConfig(tfds.core.BuilderConfig):
  """A config of the generated point-cloud sets (``canon_shapes``, ``canon_parts``):
  num_points per cloud; train/test clouds per class (per category in
  ``canon_parts``); seed of the train split (the test split uses ``seed + 1``)."""
  num_points: int = 1024
  train_per_class: int = 200
  test_per_class: int = 50
  seed: int = 0


def point_cloud_configs() -> list[CanonShapesConfig]:
  """The configs ``default`` (1024 points, 200/50 clouds per class), ``tiny`` (64
  points, 4/2; tests) and ``small`` (256 points, 100/40; demos)."""
  return [
      CanonShapesConfig(name="default", description="1024 points, 200/50 per class"),
      CanonShapesConfig(name="tiny", description="64 points, 4/2 per class (tests)",
                        num_points=64, train_per_class=4, test_per_class=2),
      CanonShapesConfig(name="small", description="256 points, 100/40 per class (demos)",
                        num_points=256, train_per_class=100, test_per_class=40),
  ]


class CanonShapes(SyntheticBuilder):
  """TFDS builder ``canon_shapes``: :func:`make_shapes` as train/test splits.

  Records: ``points`` (num_points, 3) float32, ``label`` int64 class index.
  Written as array_record (no TensorFlow needed); read with
  ``tfds.data_source("canon_shapes", data_dir=...)`` (or ``"canon_shapes/tiny"``, ``"canon_shapes/small"``)
  after ``CanonShapes(data_dir=...).download_and_prepare()``.
  """
  RELEASE_NOTES = {"1.0.0": "Ten primitive and composite shape classes."}
  DESCRIPTION = "Points sampled on surfaces of primitive and composite shapes."
  SUPERVISED_KEYS = ("points", "label")
  BUILDER_CONFIGS = point_cloud_configs()

  def _features(self) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "points": tfds.features.Tensor(shape=(self.builder_config.num_points, 3),
                                       dtype=np.float32),
        "label": tfds.features.ClassLabel(names=CLASS_NAMES)})

  def _split_sizes(self) -> dict[str, int]:
    cfg = self.builder_config
    return {"train": cfg.train_per_class, "test": cfg.test_per_class}

  def _make(self, size: int, seed: int) -> dict:
    points, labels, _ = make_shapes(size, self.builder_config.num_points, seed)
    return {"points": points, "label": labels}
