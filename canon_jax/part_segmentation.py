"""Part-segmentation metrics: per-shape mean IoU (the ShapeNet-part protocol).

For one shape with per-point predicted and true part labels, the IoU of part k is
|pred = k and true = k| / |pred = k or true = k|; the shape's mIoU is the mean of
the IoUs over the parts of its category (all ``num_parts`` labels when no category
mask is given). A part absent from both prediction and truth counts as IoU 1 (the
convention of the PointNet evaluation code: the shape is "right" about that part).
The data set's mIoU (:func:`mean_part_iou`, the "instance mIoU") is the mean over
shapes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def part_ious(predictions: jax.Array, labels: jax.Array, num_parts: int,
              part_mask: jax.Array | None = None) -> jax.Array:
  """Per-shape mIoU.

  Args:
    predictions: (S, N) int predicted part labels in [0, num_parts).
    labels: (S, N) int true part labels.
    num_parts: K, the number of part labels.
    part_mask: (S, K) bool, the parts of each shape's category; None: all K.

  Returns:
    (S,) float32 mean over the shape's parts of the IoUs (1 for a part absent
    from both prediction and truth).

  >>> import jax.numpy as jnp
  >>> part_ious(jnp.array([[0, 0, 1, 1]]), jnp.array([[0, 1, 1, 1]]), 3).round(4)
  Array([0.7222], dtype=float32)
  """
  if predictions.shape != labels.shape or predictions.ndim != 2:
    raise ValueError(f"predictions and labels must both have shape (S, N); got "
                     f"{predictions.shape} and {labels.shape}.")
  pred = jax.nn.one_hot(predictions, num_parts, dtype=jnp.float32)   # (S, N, K)
  true = jax.nn.one_hot(labels, num_parts, dtype=jnp.float32)
  intersection = jnp.sum(pred * true, axis=1)
  union = jnp.sum(jnp.maximum(pred, true), axis=1)
  iou = jnp.where(union > 0, intersection / jnp.maximum(union, 1.0), 1.0)
  weights = (jnp.ones_like(iou) if part_mask is None
             else jnp.asarray(part_mask, jnp.float32))
  return jnp.sum(iou * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


def mean_part_iou(predictions: jax.Array, labels: jax.Array, num_parts: int,
                  part_mask: jax.Array | None = None,
                  mask: jax.Array | None = None) -> jax.Array:
  """Instance mIoU: :func:`part_ious` averaged over the shapes with ``mask`` 1.

  Args: as :func:`part_ious`, plus ``mask`` (S,) float weights (1 real, 0 padding).

  Returns: a float32 scalar.
  """
  ious = part_ious(predictions, labels, num_parts, part_mask)
  if mask is None:
    return jnp.mean(ious)
  mask = jnp.asarray(mask, jnp.float32)
  return jnp.sum(ious * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def restrict_to_parts(logits: jax.Array, part_mask: jax.Array) -> jax.Array:
  """Per-point labels: argmax over the parts of each shape's category only.

  Args:
    logits: (S, N, K).
    part_mask: (S, K) bool.

  Returns:
    (S, N) int32 labels (the usual ShapeNet-part evaluation, which knows the
    category).
  """
  masked = jnp.where(jnp.asarray(part_mask, bool)[:, None, :], logits, -jnp.inf)
  return jnp.argmax(masked, axis=-1).astype(jnp.int32)
