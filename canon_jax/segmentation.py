"""Equivariant promptable instance segmentation: canonicalize, predict, invert.

Any promptable mask predictor ``predict(images, boxes)`` (SAM, or anything else that
turns box prompts into mask logits) becomes equivariant to C_n / D_n::

  images (B, H, W, C), boxes (B, M, 4) in the input frame
    --ImageCanonicalizer--> g* = element, canonical = g*^-1 . images
    --transform_boxes(g*^-1)--> prompts in the canonical frame
    --predict(canonical, prompts)--> mask logits (B, M, H, W) in the canonical frame
    --invert (g* . logits)--> mask logits in the input frame, masks = logits > threshold
    --> tight boxes around the masks, scores computed in the canonical frame

For an equivariant canonicalizer, ``g*(g . x) = g g*(x)``, so the rotated image and
rotated prompts reach ``predict`` as exactly the same arrays as the original ones, and
the outputs are the original outputs moved by g. With C4 / D4 in evaluation mode every
step is an index permutation: masks predicted for ``g . x`` equal ``g`` applied to the
masks predicted for ``x`` bit for bit, whatever ``predict`` is.

Conventions (see :mod:`canon_jax.transforms`): images NHWC float; masks and mask
logits ``(B, M, H, W)`` (instance axis before the spatial axes, as SAM and COCO hold
them); boxes ``(x_min, y_min, x_max, y_max)`` in pixel-edge coordinates (pixel
``(r, c)`` covers ``[c, c+1) x [r, r+1)``); the tight box of a mask is
``(min col, min row, max col + 1, max row + 1)``, all zeros for an empty mask.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from canon_jax import _checks, transforms
from canon_jax.canonicalize import CanonicalizationResult, ImageCanonicalizer, invert

MaskPredictor = Callable[[jax.Array, jax.Array], Any]
"""``predict(images (B, H, W, C), boxes (B, M, 4)) -> mask_logits (B, M, H, W)``, or
``(mask_logits, scores (B, M))`` when the predictor rates its own masks (SAM's IoU
head). Boxes are xyxy pixel-edge coordinates of ``images``."""


class Instances(NamedTuple):
  """A padded batch of instance annotations or predictions.

  Attributes:
    masks: (B, M, H, W) bool instance masks.
    boxes: (B, M, 4) float32 ``(x_min, y_min, x_max, y_max)``, pixel-edge coordinates.
    labels: (B, M) int32 category ids (COCO style, >= 1).
    valid: (B, M) bool: which of the M slots hold an instance (the rest is padding).
    scores: (B, M) float32 confidences for predictions; ``None`` for ground truth.
  """
  masks: Any
  boxes: Any
  labels: Any
  valid: Any
  scores: Any = None


@flax.struct.dataclass
class SegmentationOutput:
  """What :func:`segment` returns (all in the input frame unless said otherwise).

  Attributes:
    mask_logits: (B, M, H, W) float mask logits, one map per prompt.
    masks: (B, M, H, W) bool, ``mask_logits > mask_threshold``.
    boxes: (B, M, 4) tight boxes around ``masks`` (zeros for an empty mask).
    scores: (B, M) confidences, computed in the canonical frame (so invariant):
      the predictor's own, or the mean sigmoid probability inside the mask.
    prompts: (B, M, 4) the box prompts as ``predict`` saw them (canonical frame).
    canonicalization: the canonicalizer's result for the batch.
  """
  mask_logits: jax.Array
  masks: jax.Array
  boxes: jax.Array
  scores: jax.Array
  prompts: jax.Array
  canonicalization: CanonicalizationResult


def segmentation_canonicalizer(group: str = "C4", **overrides) -> ImageCanonicalizer:
  """The paper's COCO canonicalizer: a group-equivariant wide ResNet on 128 x 128 inputs.

  64 channels per group element, 9 x 9 kernels, 12 convolutions (3 stages of 2
  residual blocks), input centre-cropped to 0.8 and resized to 128 (equiadapt's
  segmentation settings): 15.9 M parameters for C4. The paper reports a 1.9 M-parameter
  canonicalizer; ``features=22`` gives that size here. ``overrides`` replace any
  :class:`~canon_jax.ImageCanonicalizer` field (e.g. ``features=4`` for tests).
  """
  fields = dict(group=group, network="wrn", features=64, kernel_size=9, num_layers=12,
                input_crop_ratio=0.8, resize=128, beta=1.0)
  fields.update(overrides)
  return ImageCanonicalizer(**fields)


def masks_to_boxes(masks: jax.Array) -> jax.Array:
  """Tight xyxy pixel-edge boxes around boolean masks: (..., H, W) -> (..., 4) float32.

  ``(min col, min row, max col + 1, max row + 1)`` of the true pixels; all zeros for
  an empty mask. Exactly equivariant under 90-degree rotations and flips.

  >>> m = jnp.zeros((1, 4, 5), bool).at[0, 1:3, 2].set(True)
  >>> masks_to_boxes(m).tolist()
  [[2.0, 1.0, 3.0, 3.0]]
  """
  masks = jnp.asarray(masks)
  _checks.check_rank(masks, "masks", tuple(range(2, 8)), "..., H, W")
  masks = masks.astype(bool)
  h, w = masks.shape[-2:]
  rows = masks.any(axis=-1)
  cols = masks.any(axis=-2)
  y0 = jnp.argmax(rows, axis=-1)
  y1 = h - jnp.argmax(rows[..., ::-1], axis=-1)
  x0 = jnp.argmax(cols, axis=-1)
  x1 = w - jnp.argmax(cols[..., ::-1], axis=-1)
  boxes = jnp.stack([x0, y0, x1, y1], axis=-1).astype(jnp.float32)
  return jnp.where(rows.any(axis=-1)[..., None], boxes, 0.0)


def _masks_last(x):
  """(B, M, H, W) -> (B, H, W, M), the layout of the image transforms."""
  return jnp.moveaxis(x, 1, -1)


def _masks_first(x):
  return jnp.moveaxis(x, -1, 1)


def _check_masks(masks, name: str):
  _checks.check_rank(masks, name, 4, "B, M, H, W: one map per instance")


def _check_boxes(boxes, name: str = "boxes"):
  _checks.check_rank(boxes, name, 3, "B, M, 4")
  _checks.check_floating(boxes, name)
  if boxes.shape[-1] != 4:
    raise ValueError(f"{name} must hold (x_min, y_min, x_max, y_max) on the last axis; "
                     f"got shape {tuple(boxes.shape)}.")


def transform_instances(instances: Instances, group, elements: jax.Array) -> Instances:
  """Applies per-image group elements to masks and boxes (labels, scores unchanged).

  Args:
    instances: masks (B, M, H, W), boxes (B, M, 4) of images of size (H, W).
    group: group or name.
    elements: (B,) integer elements.

  Returns:
    The instances of ``elements[b] . images[b]``: masks moved exactly (nearest
    sampling for non-90-degree angles), boxes as in :func:`~canon_jax.transform_boxes`.
    Padding slots keep zero boxes.
  """
  masks = jnp.asarray(instances.masks)
  _check_masks(masks, "instances.masks")
  boxes = jnp.asarray(instances.boxes, jnp.float32)
  _check_boxes(boxes, "instances.boxes")
  size = masks.shape[2:]
  moved = _masks_first(transforms.transform_label_maps(_masks_last(masks), group, elements))
  moved_boxes = transforms.transform_boxes(boxes, group, elements, size)
  valid = jnp.asarray(instances.valid, bool)
  return instances._replace(masks=moved,
                            boxes=jnp.where(valid[..., None], moved_boxes, 0.0))


def canonicalize_boxes(boxes: jax.Array, result: CanonicalizationResult,
                       image_size: tuple[int, int]) -> jax.Array:
  """Moves box prompts from the input frame to the canonical frame of ``result``.

  Applies ``g*^-1`` (or the rotation by ``-angle`` for the continuous readout) to
  (B, M, 4) xyxy pixel-edge boxes of images of ``image_size`` (H, W).
  """
  _check_boxes(boxes)
  group = result.group
  if result.angle is not None:
    return transforms.rotate_boxes(boxes, -result.angle, image_size)
  return transforms.transform_boxes(boxes, group, group.inverse(result.element), image_size)


def invert_mask_logits(mask_logits: jax.Array, result: CanonicalizationResult) -> jax.Array:
  """Maps (B, M, H, W) mask logits from the canonical frame back to the input frame.

  Evaluation mode: an exact permutation for 90-degree groups (bilinear otherwise).
  Training mode: the straight-through weighted sum, so a mask loss reaches the
  canonicalizer's logits.

  The inversion runs per sample in a loop (``lax.map``), which makes XLA materialise
  ``mask_logits`` first. Otherwise, under ``jit``, XLA may fuse the predictor's last
  elementwise arithmetic into each of the |G| candidate copies of the inversion,
  compile each copy differently (vectorisation, FMA contraction) and make the
  logits of two poses differ in the last bit.
  """
  _check_masks(mask_logits, "mask_logits")

  def one(args):
    logits, r = args
    r = jax.tree.map(lambda a: a[None], r)
    return invert(_masks_last(logits[None]), r, kind="image")[0]

  return _masks_first(jax.lax.map(one, (mask_logits, result)))


def mask_confidence(mask_logits: jax.Array, threshold: float = 0.0) -> jax.Array:
  """Confidence of each mask: mean sigmoid probability over the pixels whose logit
  exceeds ``threshold``; 0 for an empty mask. (..., H, W) -> (...)."""
  inside = mask_logits > threshold
  prob = jax.nn.sigmoid(mask_logits)
  total = jnp.sum(jnp.where(inside, prob, 0.0), axis=(-2, -1))
  count = jnp.sum(inside, axis=(-2, -1))
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


def segment(predict: MaskPredictor, result: CanonicalizationResult, boxes: jax.Array, *,
            mask_threshold: float = 0.0) -> SegmentationOutput:
  """Runs ``predict`` on the canonical images and maps its masks back.

  Args:
    predict: a promptable mask predictor (see :data:`MaskPredictor`); it sees
      ``result.canonical`` and the prompts in the canonical frame.
    result: the canonicalizer's output for images (B, H, W, C).
    boxes: (B, M, 4) float box prompts in the input frame, xyxy pixel-edge.
    mask_threshold: a pixel belongs to the mask when its logit exceeds this (SAM: 0).

  Returns:
    A :class:`SegmentationOutput`. Jittable (``predict`` permitting).
  """
  if not isinstance(result, CanonicalizationResult):
    raise TypeError(f"result must be a CanonicalizationResult; got "
                    f"{type(result).__name__}.")
  boxes = jnp.asarray(boxes)
  _check_boxes(boxes)
  canonical = result.canonical
  b, h, w = canonical.shape[:3]
  _checks.check_batch(boxes, "boxes", b)
  prompts = canonicalize_boxes(boxes, result, (h, w))
  out = predict(canonical, prompts)
  logits, scores = out if isinstance(out, tuple) else (out, None)
  expected = (b, boxes.shape[1], h, w)
  if tuple(logits.shape) != expected:
    raise ValueError(f"predict must return mask logits of shape (B, M, H, W) = "
                     f"{expected}; got {tuple(logits.shape)}.")
  if scores is None:
    scores = mask_confidence(logits, mask_threshold)
  elif tuple(scores.shape) != expected[:2]:
    raise ValueError(f"predict's scores must have shape (B, M) = {expected[:2]}; got "
                     f"{tuple(scores.shape)}.")
  logits = invert_mask_logits(logits, result)
  masks = logits > mask_threshold
  return SegmentationOutput(logits, masks, masks_to_boxes(masks), scores, prompts, result)


def segment_images(canonicalizer: ImageCanonicalizer, variables: Any, predict: MaskPredictor,
                   images: jax.Array, boxes: jax.Array, *,
                   mask_threshold: float = 0.0) -> SegmentationOutput:
  """Evaluation-mode pipeline: canonicalize ``images`` (B, H, W, C), then :func:`segment`.

  ``variables`` are the canonicalizer's (``params``, and ``batch_stats`` for "wrn").
  For training, call ``canonicalizer.apply(..., train=True, mutable=["batch_stats"])``
  and :func:`segment` on its result.
  """
  result = canonicalizer.apply(variables, images, train=False)
  return segment(predict, result, boxes, mask_threshold=mask_threshold)


def as_predictions(output: SegmentationOutput, prompts: Instances) -> Instances:
  """Box-prompted predictions as :class:`Instances`: one per prompt, with its label.

  This is the reference's COCO protocol for SAM: every ground-truth box is a prompt,
  the predicted mask inherits the prompt's category and validity, the score is the
  predicted confidence.
  """
  return Instances(masks=output.masks, boxes=output.boxes,
                   labels=jnp.asarray(prompts.labels, jnp.int32),
                   valid=jnp.asarray(prompts.valid, bool), scores=output.scores)
