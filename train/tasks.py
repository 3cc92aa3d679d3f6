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

* ``"parts"`` (:class:`PartSegmentationTask`): point clouds with per-point part
  labels (B, N), as ``"points"`` but with a segmentation head as predictor, per-point
  cross-entropy, and the per-shape mIoU (:mod:`canon_jax.part_segmentation`) at each
  test pose, labels argmaxed over the parts of the shape's category.
* ``"nbody"`` (:class:`NBodyTask`): regression of future particle positions (B, n, 3)
  from (B, n, 7) systems under E(3): mean squared error loss, random rotations and
  translations as augmentation (targets moved along) and as test poses.

A task also supplies its loss and training metrics (:meth:`per_example_loss`,
:meth:`batch_metrics`, :meth:`train_labels`; cross-entropy and accuracy for the
classification tasks) and its report lines (:meth:`summary`, :meth:`table`).

The image and point tasks' evaluations have the keys of :data:`train.report.EVAL_KEYS`, with
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
import optax

import canon_jax
from canon_jax import data as canon_data
from train import evaluate, report

TASKS = ("images", "points", "parts", "nbody")
ROTATION_MODES = ("none", "z", "so3")


def task_name(config: ml_collections.ConfigDict) -> str:
  """``config.task``, "images" when the config has no such field."""
  return config.get("task", "images")


def _per_example(x: jax.Array) -> jax.Array:
  """(B, ...) -> (B,) mean over every axis but the first."""
  return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def _frame_identity_hits(frames: jax.Array, applied: jax.Array) -> jax.Array:
  """(B,) 1.0 where Q^T R is within IDENTITY_TOLERANCE_DEG (30 degrees) of the
  identity, for predicted frames R and applied rotations Q, both (B, 3, 3)."""
  relative = jnp.einsum("bji,bjk->bik", applied, frames)
  hits = evaluate.geodesic_angle_deg(relative) < evaluate.IDENTITY_TOLERANCE_DEG
  return hits.astype(jnp.float32)


class _Classification:
  """Loss, training metrics and report lines of the (per-example or per-point)
  classification tasks."""
  progress_metric = "accuracy"

  def per_example_loss(self, predictions: jax.Array, labels: jax.Array) -> jax.Array:
    """(B,) softmax cross-entropy of (B, [N,] K) logits and (B, [N]) labels, mean
    over the points."""
    return _per_example(optax.softmax_cross_entropy_with_integer_labels(predictions,
                                                                        labels))

  def batch_metrics(self, predictions: jax.Array, labels: jax.Array
                    ) -> dict[str, jax.Array]:
    """``{'accuracy': (B,)}`` (fraction of correct points for segmentation)."""
    hits = (jnp.argmax(predictions, -1) == labels).astype(jnp.float32)
    return {"accuracy": _per_example(hits)}

  def train_labels(self, labels: jax.Array, target: Any) -> jax.Array:
    """Labels do not move with the applied transformation."""
    del target
    return labels

  def summary(self, results: dict[str, Any]) -> str:
    return (f"{self.average_name}-averaged accuracy "
            f"{100 * results['g_averaged_accuracy']:.2f}%, upright "
            f"{100 * results['accuracy']:.2f}%")

  def table(self, results: dict[str, dict[str, Any]]) -> str:
    return report.format_table(results, self.average_name)


@dataclasses.dataclass(frozen=True)
class ImageTask(_Classification):
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
class PointCloudTask(_Classification):
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
    return _frame_identity_hits(result.rotation, target)

  def make_eval_step(self, model: canon_jax.CanonicalizedModel) -> Callable:
    return evaluate.make_point_eval_step(model, self.test_rotations())

  def score(self, gathered: dict[str, np.ndarray], has_canonicalizer: bool
            ) -> dict[str, Any]:
    return evaluate.score_points(gathered, has_canonicalizer)


@dataclasses.dataclass(frozen=True)
class PartSegmentationTask(PointCloudTask):
  """Per-point part labels of point clouds under 3D rotations (``config.task == 'parts'``).

  As :class:`PointCloudTask` (training rotations, test poses, prior), with per-point
  cross-entropy and accuracy, and an evaluation scoring the per-shape mIoU at every
  test pose.

  Attributes (beyond :class:`PointCloudTask`'s):
    part_mask: (num_categories, K) bool, the parts of each category.
  """
  part_mask: np.ndarray = dataclasses.field(default=None, compare=False)
  kind = "parts"

  def make_eval_step(self, model: canon_jax.CanonicalizedModel) -> Callable:
    return evaluate.make_part_eval_step(model, self.test_rotations(), self.part_mask)

  def score(self, gathered: dict[str, np.ndarray], has_canonicalizer: bool
            ) -> dict[str, Any]:
    return evaluate.score_parts(gathered, has_canonicalizer)

  def summary(self, results: dict[str, Any]) -> str:
    return (f"mIoU upright {100 * results['miou']:.2f}%, {self.average_name} "
            f"{100 * results['rotated_miou']:.2f}%; point accuracy upright "
            f"{100 * results['accuracy']:.2f}%")

  def table(self, results: dict[str, dict[str, Any]]) -> str:
    avg = self.average_name
    return report.table(results, [
        ("mIoU", 8, report.percent("miou"), ".2f"),
        (avg + " mIoU", 12, report.percent("rotated_miou"), ".2f"),
        ("acc", 8, report.percent("accuracy"), ".2f"),
        (avg + " acc", 11, report.percent("rotated_accuracy"), ".2f"),
        ("invariant", 11, report.percent("invariance_rate"), ".2f")])


@dataclasses.dataclass(frozen=True)
class NBodyTask:
  """Future positions of particle systems under E(3) (``config.task == 'nbody'``).

  Inputs (B, n, 7) rows [x, v, q], labels (B, n, 3) positions. A Euclidean motion
  (Q, t) moves inputs and labels alike (x Q^T + t, v Q^T; labels Q^T + t).

  Attributes:
    train_rotation: "none" or "so3": rotations of the training systems (vanilla and
      canonicalized variants); the augmentation variant always uses "so3".
    test_rotation: "none" or "so3": rotations of the test poses.
    translation_std: standard deviation (per axis) of the random translations that
      come with every random rotation (training and test poses).
    num_test_poses: P, the identity and P - 1 random motions.
    seed: draws the test poses.
  """
  train_rotation: str
  test_rotation: str
  translation_std: float
  num_test_poses: int
  seed: int
  kind = "nbody"
  input_key = "particles"
  progress_metric = "mse"

  @property
  def average_name(self) -> str:
    return {"so3": "E3", "none": "upright"}[self.test_rotation]

  @property
  def pose_labels(self) -> list[str]:
    return ["I"] + [f"g{p}" for p in range(1, self.num_test_poses)]

  @property
  def pose_axis_label(self) -> str:
    return "test pose (I, then random rotations + translations of the test systems)"

  def _motions(self, rng: jax.Array, batch: int, mode: str
               ) -> tuple[jax.Array, jax.Array]:
    q = canon_data.random_rotations(rng, batch, mode)
    t = self.translation_std * jax.random.normal(jax.random.fold_in(rng, 1), (batch, 3))
    if mode == "none":
      t = jnp.zeros_like(t)
    return q, t

  def test_motions(self) -> tuple[np.ndarray, np.ndarray]:
    """(P, 3, 3) rotations and (P, 3) translations: the identity first."""
    q, t = self._motions(jax.random.key(self.seed + 7919), self.num_test_poses - 1,
                         self.test_rotation)
    return (np.concatenate([np.eye(3, dtype=np.float32)[None], np.asarray(q, np.float32)]),
            np.concatenate([np.zeros((1, 3), np.float32), np.asarray(t, np.float32)]))

  def train_inputs(self, rng: jax.Array, particles: jax.Array, augment: bool
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The systems moved by random (Q_b, t_b) ("so3" when ``augment``, else
    ``train_rotation``), and ``{'rotation': Q, 'translation': t}``."""
    from canon_jax.nbody import transform_particles  # pylint: disable=import-outside-toplevel
    q, t = self._motions(rng, particles.shape[0], "so3" if augment else self.train_rotation)
    q, t = q.astype(particles.dtype), t.astype(particles.dtype)
    return transform_particles(particles, q, t), {"rotation": q, "translation": t}

  def train_labels(self, labels: jax.Array, target: dict[str, jax.Array]) -> jax.Array:
    """Target positions moved with the inputs: labels Q^T + t."""
    return (jnp.einsum("bnj,bij->bni", labels, target["rotation"])
            + target["translation"][:, None, :])

  def prior_target(self, target: dict[str, jax.Array], augment: bool) -> jax.Array:
    """The applied rotations (the prior moves with them)."""
    del augment
    return target["rotation"]

  def identity_hits(self, result: canon_jax.PointCloudCanonicalization,
                    target: dict[str, jax.Array]) -> jax.Array:
    """(B,) 1.0 where Q^T R is within 30 degrees of the identity."""
    return _frame_identity_hits(result.rotation, target["rotation"])

  def per_example_loss(self, predictions: jax.Array, labels: jax.Array) -> jax.Array:
    """(B,) mean squared error over particles and coordinates."""
    return _per_example((predictions - labels) ** 2)

  def batch_metrics(self, predictions: jax.Array, labels: jax.Array
                    ) -> dict[str, jax.Array]:
    return {"mse": self.per_example_loss(predictions, labels)}

  def make_eval_step(self, model) -> Callable:
    return evaluate.make_nbody_eval_step(model, *self.test_motions())

  def score(self, gathered: dict[str, np.ndarray], has_canonicalizer: bool
            ) -> dict[str, Any]:
    return evaluate.score_nbody(gathered, has_canonicalizer)

  def summary(self, results: dict[str, Any]) -> str:
    return (f"MSE upright {results['mse']:.5f}, {self.average_name}-moved "
            f"{results['rotated_mse']:.5f}")

  def table(self, results: dict[str, dict[str, Any]]) -> str:
    return report.table(results, [
        ("MSE", 10, lambda r: r["mse"], ".5f"),
        (self.average_name + " MSE", 10, lambda r: r["rotated_mse"], ".5f"),
        ("worst pose", 12, lambda r: max(r["per_pose_mse"]), ".5f"),
        ("equiv. err", 12, lambda r: r["max_equivariance_error"], ".2e")])


Task = ImageTask | PointCloudTask | PartSegmentationTask | NBodyTask


def get_task(config: ml_collections.ConfigDict, train_ds: Any) -> Task:
  """The config's task (``train_ds`` gives a point-cloud dataset's vertical axis and a
  part dataset's category parts)."""
  name = task_name(config)
  if name == "images":
    return ImageTask(canon_jax.from_name(config.group))
  d = config.data
  if name == "nbody":
    return NBodyTask(train_rotation=d.train_rotation, test_rotation=d.test_rotation,
                     translation_std=float(d.translation_std),
                     num_test_poses=int(d.num_test_poses), seed=int(config.seed))
  kwargs = dict(train_rotation=d.train_rotation, test_rotation=d.test_rotation,
                num_test_poses=int(d.num_test_poses), up_axis=train_ds.up_axis,
                seed=int(config.seed))
  if name == "parts":
    return PartSegmentationTask(part_mask=train_ds.part_mask, **kwargs)
  return PointCloudTask(**kwargs)
