"""What an image run and a point-cloud run do differently.

The trainer (:mod:`train.trainer`) runs both the same way: variants in order,
sharded jitted update steps, checkpoints, resume, evaluation on a fixed set of test
*poses*, reports. A task supplies the parts that depend on the data
(``config.task``):

* ``"images"`` (:class:`ImageTask`, the default): (B, H, W, C) images under a
  discrete group G (``config.group``). Poses: the |G| elements. Augmentation:
  a uniformly random element per image. Prior: ``canon_jax.prior_loss`` towards
  the identity (or towards the applied element, see :mod:`train.step`).
* ``"points"`` (:class:`PointCloudTask`): (B, N, 3) clouds (rows x, y, z) under
  3D rotations, a :class:`canon_jax.PointCloudCanonicalizer` in front of a
  point-cloud classifier. Training clouds are rotated by
  ``config.data.train_rotation`` ("none", "z" about the dataset's vertical axis,
  or "so3"); the ``augmentation`` variant always trains on "so3" rotations (the
  SO(3)/SO(3) baseline: ``augment``). Poses: ``config.data.num_test_poses`` fixed rotations,
  pose 0 the identity and the others drawn once from ``config.data.test_rotation``
  with the run's seed. Prior: ``canon_jax.rotation_prior_loss`` of
  ``Q^T R(x Q^T)``, i.e. mean (R - Q)^2 with Q the applied rotation: an
  equivariant canonicalizer with ``R(x) = I`` on upright clouds has
  ``R(x Q^T) = Q``, so the prior moves with the augmentation.

Both tasks' evaluations have the keys of :data:`train.report.EVAL_KEYS`, with
"element" read as "pose" for point clouds (``per_element_accuracy`` is the accuracy
at each test pose, ``g_averaged_accuracy`` their mean, the identity included, as
for images).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import canon_jax
from canon_jax import data as canon_data
from train import evaluate

TASKS = ("images", "points")
ROTATION_MODES = ("none", "z", "so3")


def task_name(config: ml_collections.ConfigDict) -> str:
  """``config.task``, "images" when the config has no such field."""
  return config.get("task", "images")


@dataclasses.dataclass(frozen=True)
class ImageTask:
  """Images under a discrete group (see the module docstring)."""
  group: canon_jax.DiscreteGroup
  kind = "images"
  input_key = "image"

  @property
  def average_name(self) -> str:
    return self.group.name

  @property
  def pose_labels(self) -> list[str]:
    return [f"{np.degrees(a):.0f}°" + (" +flip" if f else "")
            for a, f in zip(self.group.angles, self.group.flips)]

  @property
  def pose_axis_label(self) -> str:
    return f"{self.group.name} element applied to the test images"

  def train_inputs(self, rng: jax.Array, images: jax.Array, augment: bool
                   ) -> tuple[jax.Array, jax.Array]:
    """``(g_b . images_b, g_b)`` with g_b uniform when ``augment``, else the identity."""
    b = images.shape[0]
    if not augment:
      return images, jnp.zeros((b,), jnp.int32)
    elements = jax.random.randint(rng, (b,), 0, self.group.order)
    return canon_jax.transform_images(images, self.group, elements), elements

  def prior_target(self, target: jax.Array, augment: bool) -> jax.Array | None:
    """The applied elements when ``augment`` (the prior moves with them), else None
    (the identity prior)."""
    return target if augment else None

  def identity_hits(self, result: canon_jax.CanonicalizationResult, target: jax.Array
                    ) -> jax.Array:
    """(B,) 1.0 where the predicted element is the target."""
    return (result.element == target).astype(jnp.float32)

  def make_eval_step(self, model: canon_jax.CanonicalizedModel) -> Callable:
    return evaluate.make_eval_step(model, self.group)

  def score(self, gathered: dict[str, np.ndarray], has_canonicalizer: bool
            ) -> dict[str, Any]:
    return evaluate.score(gathered, self.group, has_canonicalizer)


@dataclasses.dataclass(frozen=True)
class PointCloudTask:
  """Point clouds under 3D rotations (see the module docstring).

  Attributes:
    train_rotation: "none", "z" or "so3": poses of the training clouds (vanilla
      and canonicalized variants; the augmentation variant uses "so3").
    test_rotation: "none", "z" or "so3": distribution of the test poses.
    num_test_poses: P, the identity and P - 1 random rotations.
    up_axis: the dataset's vertical axis (for "z").
    seed: draws the test poses.
  """
  train_rotation: str
  test_rotation: str
  num_test_poses: int
  up_axis: int
  seed: int
  kind = "points"
  input_key = "points"

  @property
  def average_name(self) -> str:
    return {"so3": "SO3", "z": "z-rot", "none": "upright"}[self.test_rotation]

  @property
  def pose_labels(self) -> list[str]:
    return ["I"] + [f"Q{p}" for p in range(1, self.num_test_poses)]

  @property
  def pose_axis_label(self) -> str:
    return (f"test pose (I, then random {self.test_rotation} rotations of the "
            "test clouds)")

  def test_rotations(self) -> np.ndarray:
    """(P, 3, 3): the identity, then P - 1 rotations of ``test_rotation``."""
    rest = canon_data.random_rotations(
        jax.random.key(self.seed + 7919), self.num_test_poses - 1, self.test_rotation,
        self.up_axis)
    return np.concatenate([np.eye(3, dtype=np.float32)[None],
                           np.asarray(rest, np.float32)])

  def train_mode(self, augment: bool) -> str:
    """"so3" for augmented training, else ``train_rotation``."""
    return "so3" if augment else self.train_rotation

  def train_inputs(self, rng: jax.Array, points: jax.Array, augment: bool
                   ) -> tuple[jax.Array, jax.Array]:
    """``(points_b Q_b^T, Q_b)`` with Q_b drawn from :meth:`train_mode` (every variant)."""
    q = canon_data.random_rotations(rng, points.shape[0], self.train_mode(augment),
                                    self.up_axis).astype(points.dtype)
    return jnp.einsum("bnj,bij->bni", points, q), q

  def prior_target(self, target: jax.Array, augment: bool) -> jax.Array:
    """The applied rotations: the prior always moves with them."""
    del augment
    return target

  def identity_hits(self, result: canon_jax.PointCloudCanonicalization,
                    target: jax.Array) -> jax.Array:
    """(B,) 1.0 where Q^T R is within 30 degrees of the identity."""
    relative = jnp.einsum("bji,bjk->bik", target, result.rotation)
    hits = evaluate.geodesic_angle_deg(relative) < evaluate.IDENTITY_TOLERANCE_DEG
    return hits.astype(jnp.float32)

  def make_eval_step(self, model: canon_jax.CanonicalizedModel) -> Callable:
    return evaluate.make_point_eval_step(model, self.test_rotations())

  def score(self, gathered: dict[str, np.ndarray], has_canonicalizer: bool
            ) -> dict[str, Any]:
    return evaluate.score_points(gathered, has_canonicalizer)


Task = ImageTask | PointCloudTask


def get_task(config: ml_collections.ConfigDict, train_ds: Any) -> Task:
  """The config's task (``train_ds`` gives a point-cloud dataset's vertical axis)."""
  if task_name(config) == "images":
    return ImageTask(canon_jax.from_name(config.group))
  d = config.data
  return PointCloudTask(train_rotation=d.train_rotation, test_rotation=d.test_rotation,
                        num_test_poses=int(d.num_test_poses), up_axis=train_ds.up_axis,
                        seed=int(config.seed))

