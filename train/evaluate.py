"""Evaluation under the group: every test image in all |G| poses (point clouds: in P
fixed test rotations, :func:`make_point_eval_step`).

For a test batch ``x`` (B images) the eval step builds the |G| copies ``g . x``
(:func:`canon_jax.all_transforms`: exact for multiples of 90 degrees, bilinear with
edge extension otherwise), runs the variant's model in inference mode on all of
them at once, and returns per-copy class predictions and canonicalizer elements,
replicated on every process. The host concatenates them over the test set and
scores them with :mod:`canon_jax.metrics`:

* ``accuracy``: on the test set as it is (copy 0, the identity);
* ``per_element_accuracy``: (|G|,) accuracy on each transformed copy;
* ``g_averaged_accuracy``: their mean;
* ``invariance_rate``: fraction of images whose prediction is the same in all poses;
* ``identity_rate``: fraction of upright images the canonicalizer maps to the
  identity (1 without canonicalizer: the identity is always applied);
* ``orientation_alignment``: KL and total variation between the identity prior and
  the histogram of elements predicted on the upright test set;
* ``canonicalizer_equivariance_rate``: fraction of images whose predicted element
  moves exactly with the input, ``element(g . x) = g o element(x)`` for every g
  (``None`` without canonicalizer).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

import canon_jax

EvalOutputs = dict[str, jax.Array]

IDENTITY_TOLERANCE_DEG = 30.0
"""A point-cloud frame counts as the identity within this geodesic angle."""


def geodesic_angle_deg(rotation: jax.Array) -> jax.Array:
  """Rotation angle (degrees, in [0, 180]) of (..., 3, 3) rotation matrices."""
  cos = (jnp.trace(rotation, axis1=-2, axis2=-1) - 1.0) / 2.0
  return jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))


def _variables(params, batch_stats) -> dict:
  return {"params": params, "batch_stats": batch_stats} if batch_stats else {
      "params": params}


def make_eval_step(model: canon_jax.CanonicalizedModel, group: canon_jax.DiscreteGroup
                   ) -> Callable[[dict, dict, dict], EvalOutputs]:
  """``eval_step(params, batch_stats, batch) -> outputs`` (pure; jit it).

  ``batch``: ``image`` (B, H, W, C), ``label`` (B,), ``mask`` (B,). Outputs:
  ``predictions`` (|G|, B) int32 classes and ``elements`` (|G|, B) int32
  canonicalizer elements (zeros without canonicalizer), copy g computed on
  ``g . image``; and the batch's ``label`` and ``mask`` (so that, jitted with
  replicated outputs, every process can score the whole batch).
  """

  def eval_step(params, batch_stats, batch):
    images = batch["image"]
    b = images.shape[0]
    copies = canon_jax.all_transforms(images, group)          # (|G|, B, H, W, C)
    flat = copies.reshape((group.order * b,) + images.shape[1:])
    out = model.apply(_variables(params, batch_stats), flat)
    result = out.canonicalization
    predictions = jnp.argmax(out.predictions, axis=-1).astype(jnp.int32).reshape(
        group.order, b)
    if result is None:
      elements = jnp.zeros((group.order, b), jnp.int32)
    else:
      elements = result.element.reshape(group.order, b)
    return {"predictions": predictions, "elements": elements, "label": batch["label"],
            "mask": batch["mask"]}

  return eval_step


def make_visualize(model: canon_jax.CanonicalizedModel, group: canon_jax.DiscreteGroup,
                   num_images: int
                   ) -> Callable[[dict, dict, jax.Array], dict[str, jax.Array]]:
  """``visualize(params, batch_stats, images) -> {'inputs', 'canonical', 'elements'}``.

  For the first ``num_images`` images N of ``images`` (B, H, W, C): ``inputs``
  (|G|, N, H, W, C) are the transformed copies ``g . x``, ``canonical`` the
  canonicalizer's outputs on them (equal across g for an invariant model), and
  ``elements`` (|G|, N) the predicted elements. Needs a canonicalizer.
  """
  if model.canonicalizer is None:
    raise ValueError("visualize needs the canonicalized variant's model.")

  def visualize(params, batch_stats, images):
    x = images[:num_images]
    copies = canon_jax.all_transforms(x, group)
    flat = copies.reshape((-1,) + x.shape[1:])
    result = model.apply(_variables(params, batch_stats), flat).canonicalization
    return {"inputs": copies, "canonical": result.canonical.reshape(copies.shape),
            "elements": result.element.reshape(group.order, -1)}

  return visualize


def gather_outputs(outputs: Iterable[EvalOutputs]) -> dict[str, np.ndarray]:
  """Concatenates per-batch eval outputs over the test set (host, numpy).

  Args:
    outputs: :func:`make_eval_step` (or :func:`make_point_eval_step`) outputs, one
      per global batch, fully replicated (readable on every process).

  Returns:
    The same keys over the whole (padded) test set: ``label`` (N,) and ``mask``
    (N,) concatenated on axis 0, every other (pose-major) output, e.g.
    ``predictions`` (P, N), on axis 1.
  """
  parts: dict[str, list[np.ndarray]] = {}
  for out in outputs:
    out = jax.device_get(out)  # host sync after every batch (see the trainer)
    for key, value in out.items():
      parts.setdefault(key, []).append(np.asarray(value))
  if not parts:
    raise ValueError("the evaluation split gave no batch; check config.data.eval_split.")
  gathered = {k: np.concatenate(v, 0 if k in ("label", "mask") else 1)
              for k, v in parts.items()}
  gathered["labels"] = gathered.pop("label")
  return gathered


def score(gathered: dict[str, np.ndarray], group: canon_jax.DiscreteGroup,
          has_canonicalizer: bool) -> dict[str, Any]:
  """Metrics of one variant from :func:`gather_outputs` (floats and lists, JSON-ready).

  Keys: ``accuracy``, ``g_averaged_accuracy``, ``per_element_accuracy`` (list of
  |G|), ``identity_rate``, ``invariance_rate``, ``orientation_alignment``
  (``{'kl', 'total_variation', 'histogram'}``), ``canonicalizer_equivariance_rate``
  and ``num_examples``. Accuracies are fractions in [0, 1].
  """
  preds = jnp.asarray(gathered["predictions"])
  elements = jnp.asarray(gathered["elements"])
  labels = jnp.asarray(gathered["labels"])
  mask = jnp.asarray(gathered["mask"], jnp.float32)
  per = canon_jax.per_element_accuracy(preds, labels, mask)
  align = canon_jax.orientation_alignment(elements[0], None, group.order, mask)
  equivariance = None
  if has_canonicalizer:
    expected = jnp.asarray(group.table)[jnp.arange(group.order)[:, None], elements[0][None]]
    moves = jnp.all(elements == expected, axis=0).astype(jnp.float32)
    equivariance = float(jnp.sum(moves * mask) / jnp.maximum(jnp.sum(mask), 1.0))
  return {
      "accuracy": float(per[0]),
      "g_averaged_accuracy": float(canon_jax.group_averaged_accuracy(preds, labels, mask)),
      "per_element_accuracy": [float(a) for a in per],
      "identity_rate": float(canon_jax.identity_rate(elements[0], mask)),
      "invariance_rate": float(canon_jax.invariance_rate(preds, mask)),
      "orientation_alignment": {
          "kl": float(align["kl"]), "total_variation": float(align["total_variation"]),
          "histogram": [float(h) for h in align["histogram"]]},
      "canonicalizer_equivariance_rate": equivariance,
      "num_examples": int(np.sum(gathered["mask"])),
  }


def make_point_eval_step(model: canon_jax.CanonicalizedModel, rotations: np.ndarray
                         ) -> Callable[[dict, dict, dict], EvalOutputs]:
  """The point-cloud ``eval_step(params, batch_stats, batch) -> outputs`` (pure; jit it).

  Args:
    model: the variant's model (canonicalizer optional).
    rotations: (P, 3, 3) test poses Q_p, ``rotations[0]`` the identity.

  ``batch``: ``points`` (B, N, 3), ``label`` (B,), ``mask`` (B,). Outputs:
  ``predictions`` (P, B) int32, classes of the clouds ``points @ Q_p^T``; with a
  canonicalizer, ``identity_angle`` (1, B): geodesic angle (degrees) of the frame
  R(x) predicted for the clouds as they are, and ``equivariance_angle`` (P, B):
  angle between R(x Q_p^T) and Q_p R(x) (0 for an exactly equivariant
  canonicalizer); and ``label``, ``mask``.
  """
  q = jnp.asarray(rotations, jnp.float32)
  num_poses = q.shape[0]

  def eval_step(params, batch_stats, batch):
    points = batch["points"]
    b = points.shape[0]
    copies = jnp.einsum("bnj,pij->pbni", points, q.astype(points.dtype))
    flat = copies.reshape((num_poses * b,) + points.shape[1:])
    model_out = model.apply(_variables(params, batch_stats), flat)
    out = {"predictions": jnp.argmax(model_out.predictions, -1).astype(jnp.int32).reshape(
               num_poses, b),
           "label": batch["label"], "mask": batch["mask"]}
    return _with_frame_angles(out, model_out, q, num_poses, b)

  return eval_step


def score_points(gathered: dict[str, np.ndarray], has_canonicalizer: bool
                 ) -> dict[str, Any]:
  """Metrics of one point-cloud variant from :func:`gather_outputs` (JSON-ready).

  Keys: those of :func:`score` with "element" read as "test pose":
  ``accuracy`` (pose 0, the clouds as they are), ``per_element_accuracy`` (P,),
  ``g_averaged_accuracy`` (their mean), ``invariance_rate``; ``identity_rate``
  (fraction of clouds whose frame is within 30 degrees of the identity; 1 without
  canonicalizer); and ``rotated_accuracy`` (mean over the poses 1..P-1 only),
  ``mean_identity_angle_deg`` and ``max_equivariance_angle_deg`` (the largest
  angle between R(x Q^T) and Q R(x) over the test set; ``None`` without
  canonicalizer), ``num_examples``.
  """
  preds = jnp.asarray(gathered["predictions"])
  labels = jnp.asarray(gathered["labels"])
  mask_np = np.asarray(gathered["mask"], np.float32)
  mask = jnp.asarray(mask_np)
  per = np.asarray(canon_jax.per_element_accuracy(preds, labels, mask))
  real = mask_np > 0
  identity_rate, mean_angle, max_equivariance = _frame_scores(gathered, real,
                                                              has_canonicalizer)
  return {
      "accuracy": float(per[0]),
      "g_averaged_accuracy": float(np.mean(per)),
      "per_element_accuracy": [float(a) for a in per],
      "rotated_accuracy": _mean_over_moved_poses(per),
      "identity_rate": identity_rate,
      "invariance_rate": float(canon_jax.invariance_rate(preds, mask)),
      "mean_identity_angle_deg": mean_angle,
      "max_equivariance_angle_deg": max_equivariance,
      "num_examples": int(np.sum(real)),
  }


def _mean_over_moved_poses(per_pose: np.ndarray) -> float:
  """The mean of a per-pose metric over poses 1..P-1 (pose 0 alone when P = 1)."""
  return float(np.mean(per_pose[1:])) if len(per_pose) > 1 else float(per_pose[0])


def _frame_scores(gathered: dict[str, np.ndarray], real: np.ndarray,
                  has_canonicalizer: bool) -> tuple[float, float | None, float | None]:
  """``(identity_rate, mean identity angle, max equivariance angle)`` (degrees) of
  the frames over the real (unpadded) examples; ``(1, None, None)`` without one."""
  if not has_canonicalizer:
    return 1.0, None, None
  angle = np.asarray(gathered["identity_angle"])[0][real]
  return (float(np.mean(angle < IDENTITY_TOLERANCE_DEG)), float(np.mean(angle)),
          float(np.max(np.asarray(gathered["equivariance_angle"])[:, real])))


def _with_frame_angles(out: EvalOutputs, model_out, rotations: jax.Array, num_poses: int,
                       b: int) -> EvalOutputs:
  """``out`` plus, with a canonicalizer, ``identity_angle`` (1, B) and
  ``equivariance_angle`` (P, B) of its frames computed on the P rotated copies."""
  if model_out.canonicalization is None:
    return out
  frames = model_out.canonicalization.rotation.reshape(num_poses, b, 3, 3)
  expected = jnp.einsum("pij,bjk->pbik", rotations, frames[0])
  return {**out, "identity_angle": geodesic_angle_deg(frames[:1]),
          "equivariance_angle": geodesic_angle_deg(
              jnp.einsum("pbji,pbjk->pbik", expected, frames))}


def make_part_eval_step(model: canon_jax.CanonicalizedModel, rotations: np.ndarray,
                        part_mask: np.ndarray) -> Callable[[dict, dict, dict], EvalOutputs]:
  """The part-segmentation ``eval_step(params, batch_stats, batch) -> outputs``.

  Args:
    model: the variant's model (a segmentation predictor, canonicalizer optional).
    rotations: (P, 3, 3) test poses Q_p, ``rotations[0]`` the identity.
    part_mask: (num_categories, K) bool, the parts of each category.

  ``batch``: ``points`` (B, N, 3), ``label`` (B, N) part labels, ``category`` (B,),
  ``mask`` (B,). Per-point predictions are the argmax over the parts of the
  shape's category (:func:`canon_jax.part_segmentation.restrict_to_parts`) on the
  clouds ``points @ Q_p^T``. Outputs: ``iou`` (P, B) per-shape mIoU,
  ``point_accuracy`` (P, B), ``invariant`` (1, B) 1.0 where every point's label is
  the same in all poses; with a canonicalizer ``identity_angle`` and
  ``equivariance_angle`` as :func:`make_point_eval_step`; and ``label``, ``mask``.
  """
  from canon_jax import part_segmentation  # pylint: disable=import-outside-toplevel
  q = jnp.asarray(rotations, jnp.float32)
  table = jnp.asarray(part_mask, bool)
  num_poses = q.shape[0]

  def eval_step(params, batch_stats, batch):
    points, labels = batch["points"], batch["label"]
    b, n = labels.shape
    copies = jnp.einsum("bnj,pij->pbni", points, q.astype(points.dtype))
    model_out = model.apply(_variables(params, batch_stats),
                            copies.reshape((num_poses * b,) + points.shape[1:]))
    masks = jnp.tile(table[batch["category"]], (num_poses, 1))
    preds = part_segmentation.restrict_to_parts(model_out.predictions, masks)
    tiled = jnp.tile(labels, (num_poses, 1))
    iou = part_segmentation.part_ious(preds, tiled, table.shape[1], masks)
    preds = preds.reshape(num_poses, b, n)
    out = {"iou": iou.reshape(num_poses, b),
           "point_accuracy": jnp.mean((preds == labels[None]).astype(jnp.float32), -1),
           "invariant": jnp.all(preds == preds[:1], axis=(0, 2))[None].astype(jnp.float32),
           "label": labels, "mask": batch["mask"]}
    return _with_frame_angles(out, model_out, q, num_poses, b)

  return eval_step


def score_parts(gathered: dict[str, np.ndarray], has_canonicalizer: bool
                ) -> dict[str, Any]:
  """Metrics of one part-segmentation variant from :func:`gather_outputs`.

  Keys: ``miou`` (instance mIoU at pose 0, the clouds as they are),
  ``per_pose_miou`` (P,), ``g_averaged_miou`` (their mean), ``rotated_miou``
  (mean over poses 1..P-1); the same for the per-point accuracy (``accuracy``,
  ``per_element_accuracy``, ``g_averaged_accuracy``, ``rotated_accuracy``);
  ``invariance_rate`` (shapes labelled identically in all poses), ``identity_rate``,
  ``mean_identity_angle_deg``, ``max_equivariance_angle_deg`` (as
  :func:`score_points`), ``num_examples``. Fractions in [0, 1].
  """
  real = np.asarray(gathered["mask"]) > 0
  iou = np.asarray(gathered["iou"])[:, real]
  acc = np.asarray(gathered["point_accuracy"])[:, real]
  per_iou, per_acc = iou.mean(axis=1), acc.mean(axis=1)
  identity_rate, mean_angle, max_equivariance = _frame_scores(gathered, real,
                                                              has_canonicalizer)
  return {
      "miou": float(per_iou[0]), "per_pose_miou": [float(x) for x in per_iou],
      "g_averaged_miou": float(np.mean(per_iou)),
      "rotated_miou": _mean_over_moved_poses(per_iou),
      "accuracy": float(per_acc[0]), "per_element_accuracy": [float(x) for x in per_acc],
      "g_averaged_accuracy": float(np.mean(per_acc)),
      "rotated_accuracy": _mean_over_moved_poses(per_acc),
      "invariance_rate": float(np.mean(np.asarray(gathered["invariant"])[0][real])),
      "identity_rate": identity_rate, "mean_identity_angle_deg": mean_angle,
      "max_equivariance_angle_deg": max_equivariance, "num_examples": int(real.sum()),
  }


def make_nbody_eval_step(model, rotations: np.ndarray, translations: np.ndarray
                         ) -> Callable[[dict, dict, dict], EvalOutputs]:
  """The n-body ``eval_step(params, batch_stats, batch) -> outputs`` (pure; jit it).

  Args:
    model: the variant's :class:`canon_jax.NBodyModel`.
    rotations: (P, 3, 3) test rotations Q_p, ``rotations[0]`` the identity.
    translations: (P, 3) test translations t_p, ``translations[0]`` zero.

  ``batch``: ``particles`` (B, n, 7), ``label`` (B, n, 3), ``mask`` (B,). For every
  pose the systems are moved by (Q_p, t_p) and so are the targets. Outputs:
  ``sq_error`` (P, B) mean squared error per system; ``equivariance_error`` (P, B)
  |(f(g_p . x) - t_p) Q_p - f(x)| / |f(x)| (0 for an E(3)-equivariant model);
  with a canonicalizer ``identity_angle`` and ``equivariance_angle`` as
  :func:`make_point_eval_step`; and ``label``, ``mask``.
  """
  from canon_jax.nbody import transform_particles  # pylint: disable=import-outside-toplevel
  q = jnp.asarray(rotations, jnp.float32)
  t = jnp.asarray(translations, jnp.float32)
  num_poses = q.shape[0]

  def eval_step(params, batch_stats, batch):
    x, labels = batch["particles"], batch["label"]
    b = x.shape[0]
    qs, ts = jnp.repeat(q, b, axis=0), jnp.repeat(t, b, axis=0)       # pose-major
    moved = transform_particles(jnp.tile(x, (num_poses, 1, 1)), qs, ts)
    model_out = model.apply(_variables(params, batch_stats), moved)
    pred = model_out.predictions                                      # (P * B, n, 3)
    target = jnp.einsum("bnj,bij->bni", jnp.tile(labels, (num_poses, 1, 1)), qs) + ts[:, None]
    sq_error = jnp.mean((pred - target) ** 2, axis=(1, 2)).reshape(num_poses, b)
    back = jnp.einsum("bni,bij->bnj", pred - ts[:, None], qs).reshape(
        (num_poses, b) + labels.shape[1:])
    err = jnp.sqrt(jnp.sum((back - back[:1]) ** 2, axis=(2, 3))
                   / jnp.maximum(jnp.sum(back[:1] ** 2, axis=(2, 3)), 1e-12))
    out = {"sq_error": sq_error, "equivariance_error": err, "label": labels,
           "mask": batch["mask"]}
    return _with_frame_angles(out, model_out, q, num_poses, b)

  return eval_step


def score_nbody(gathered: dict[str, np.ndarray], has_canonicalizer: bool
                ) -> dict[str, Any]:
  """Metrics of one n-body variant from :func:`gather_outputs` (JSON-ready).

  Keys: ``mse`` (pose 0, the test systems as they are), ``per_pose_mse`` (P,),
  ``averaged_mse`` (their mean), ``rotated_mse`` (mean over poses 1..P-1),
  ``max_equivariance_error`` (largest relative deviation from E(3)-equivariance
  over the test set), ``mean_identity_angle_deg`` (``None`` without canonicalizer),
  ``num_examples``.
  """
  real = np.asarray(gathered["mask"]) > 0
  per = np.asarray(gathered["sq_error"])[:, real].mean(axis=1)
  _, mean_angle, _ = _frame_scores(gathered, real, has_canonicalizer)
  return {
      "mse": float(per[0]), "per_pose_mse": [float(x) for x in per],
      "averaged_mse": float(np.mean(per)), "rotated_mse": _mean_over_moved_poses(per),
      "max_equivariance_error": float(np.max(np.asarray(
          gathered["equivariance_error"])[:, real])),
      "mean_identity_angle_deg": mean_angle, "num_examples": int(real.sum()),
  }
