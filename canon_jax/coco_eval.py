"""COCO-style instance-segmentation metrics (mask and box AP) and their G-averaged form.

A thin adapter around ``pycocotools`` (the official COCO evaluation; install the
``coco`` extra): padded batches of :class:`~canon_jax.segmentation.Instances` are
encoded as RLE masks and xywh boxes and scored by ``COCOeval``. Metric names follow
``COCOeval.summarize()``::

  AP          mean over IoU thresholds .50:.05:.95 (the "mAP" of the papers)
  AP50, AP75  at one IoU threshold
  AP_small, AP_medium, AP_large   by ground-truth area (< 32^2, < 96^2, larger)
  AR1, AR10, AR100                mean recall with at most 1 / 10 / 100 detections
  AR_small, AR_medium, AR_large

prefixed with the IoU type: ``"segm/AP"``, ``"bbox/AP50"``, ... Values are in
[0, 1]; ``nan`` where pycocotools has nothing to average (e.g. no large objects).

Two frames of ground truth:

* the model input itself (:meth:`CocoEvaluator.add`): ground truth and predictions
  are :class:`Instances` on the same images (generated data, square already);
* the original images (:meth:`CocoEvaluator.add_original`, what COCO's numbers
  mean): the model saw each image resized so that its longer side is S and
  zero-padded to S x S (:func:`canon_jax.data.image_ops.resize_longest_side_and_pad`,
  SAM's layout); its predictions are mapped back to the original H x W
  (:func:`square_to_original`) and scored against the annotations as the dataset
  gives them (:class:`OriginalImage`), crowd regions included: COCOeval treats
  ``iscrowd=1`` regions as ignore regions (a detection that matches only a crowd
  region is neither a true nor a false positive), and areas (small / medium / large)
  are those of the original image.

The G-averaged protocol (:func:`group_averaged_map`; "C4-averaged mAP" in the
paper): every image is evaluated at all |G| poses ``g . x``: the image and its
prompts are moved by g, the predictions made at that pose are moved back by g^-1
and scored against the ground truth, which is never resampled. For C4 / D4 both
moves are exact index permutations, so this equals scoring at pose g against the
ground truth moved by g. Unlike equiadapt's example, which compares predictions
made in the canonical frame with the untransformed ground truth, predictions here
are mapped back to the input frame (:mod:`canon_jax.segmentation`), so the number
measures the model's equivariance rather than whether the canonicalizer happens to
choose upright.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np

from canon_jax import transforms
from canon_jax.data.image_ops import longest_side_shape
from canon_jax.groups import from_name
from canon_jax.segmentation import Instances, transform_instances

IOU_TYPES = ("segm", "bbox")
STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10",
              "AR100", "AR_small", "AR_medium", "AR_large")
"""The 12 numbers of ``COCOeval.stats``, in order."""


def _pycocotools():
  try:
    from pycocotools import mask as mask_utils  # pylint: disable=import-outside-toplevel
    from pycocotools.coco import COCO  # pylint: disable=import-outside-toplevel
    from pycocotools.cocoeval import COCOeval  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ImportError("COCO evaluation needs pycocotools: pip install 'canon-jax[coco]' "
                      "(or pip install pycocotools).") from error
  return mask_utils, COCO, COCOeval


def _as_numpy(instances: Instances, name: str, need_scores: bool) -> Instances:
  masks = np.asarray(instances.masks).astype(bool)
  boxes = np.asarray(instances.boxes, np.float64)
  labels = np.asarray(instances.labels)
  valid = np.asarray(instances.valid).astype(bool)
  if masks.ndim != 4:
    raise ValueError(f"{name}.masks must have shape (B, M, H, W); got {masks.shape}.")
  if boxes.shape != masks.shape[:2] + (4,):
    raise ValueError(f"{name}.boxes must have shape (B, M, 4) = {masks.shape[:2] + (4,)}; "
                     f"got {boxes.shape}.")
  for field, value in (("labels", labels), ("valid", valid)):
    if value.shape != masks.shape[:2]:
      raise ValueError(f"{name}.{field} must have shape (B, M) = {masks.shape[:2]}; got "
                       f"{value.shape}.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise TypeError(f"{name}.labels must be integer category ids; got {labels.dtype}.")
  if np.any(labels[valid] < 1):
    raise ValueError(f"{name}.labels of valid instances must be category ids >= 1; got "
                     f"{labels[valid].min()}.")
  scores = None
  if need_scores:
    if instances.scores is None:
      raise ValueError(f"{name}.scores must be given (B, M) confidences; got None.")
    scores = np.asarray(instances.scores, np.float64)
    if scores.shape != masks.shape[:2]:
      raise ValueError(f"{name}.scores must have shape (B, M) = {masks.shape[:2]}; got "
                       f"{scores.shape}.")
  return Instances(masks, boxes, labels, valid, scores)


def _xywh(box: np.ndarray) -> list[float]:
  x0, y0, x1, y1 = (float(v) for v in box)
  return [x0, y0, x1 - x0, y1 - y0]


ANNOTATION_KEYS = ("category_id", "bbox", "area", "iscrowd", "segmentation")
"""The fields of a COCO annotation that scoring reads."""


class OriginalImage(NamedTuple):
  """An image as the dataset gives it: its size and its ground truth.

  Attributes:
    height, width: the original size H, W in pixels.
    annotations: COCO-format annotations in original pixel coordinates, crowd
      regions included: dicts with ``category_id`` (>= 1), ``bbox`` (xywh),
      ``area``, ``iscrowd`` (0 or 1) and ``segmentation`` (polygons or RLE of the
      H x W image).
  """
  height: int
  width: int
  annotations: tuple[dict[str, Any], ...] = ()


def resize_masks_nearest(masks: np.ndarray, height: int, width: int) -> np.ndarray:
  """(..., h, w) -> (..., height, width): each output pixel takes the input pixel
  under its centre (``floor((r + 0.5) h / height)``, likewise for columns)."""
  h, w = masks.shape[-2:]
  rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(int), h - 1)
  cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(int), w - 1)
  return masks[..., rows[:, None], cols[None, :]]


def square_to_original(masks: np.ndarray, boxes: np.ndarray, height: int, width: int
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Maps instances on an S x S model input back to the original H x W image.

  The input holds the image resized so that its longer side is S, in the top-left
  ``(h, w) = longest_side_shape(height, width, S)`` pixels, and zero padding.

  Args:
    masks: (K, S, S) bool masks on the input.
    boxes: (K, 4) xyxy pixel-edge boxes on the input.
    height, width: the original size.

  Returns:
    ``masks`` (K, height, width) bool: the padding cropped off, then nearest-neighbour
    resized (:func:`resize_masks_nearest`); ``boxes`` (K, 4) float64 scaled by
    ``(width / w, height / h)`` and clipped to the image.
  """
  masks = np.asarray(masks).astype(bool)
  boxes = np.asarray(boxes, np.float64)
  if masks.ndim != 3 or masks.shape[1] != masks.shape[2]:
    raise ValueError(f"masks must have shape (K, S, S) (a square model input); got "
                     f"{masks.shape}.")
  if boxes.shape != (masks.shape[0], 4):
    raise ValueError(f"boxes must have shape (K, 4) = {(masks.shape[0], 4)}; got "
                     f"{boxes.shape}.")
  h, w = longest_side_shape(height, width, masks.shape[1])
  out = resize_masks_nearest(masks[:, :h, :w], height, width)
  scaled = boxes * np.asarray([width / w, height / h, width / w, height / h])
  return out, np.clip(scaled, 0.0, np.asarray([width, height, width, height], np.float64))


def _check_original(original: Any, name: str) -> OriginalImage:
  if not isinstance(original, OriginalImage):
    raise TypeError(f"{name} must be an OriginalImage; got {type(original).__name__}.")
  for j, ann in enumerate(original.annotations):
    missing = [k for k in ANNOTATION_KEYS if k not in ann]
    if missing:
      raise ValueError(f"{name}.annotations[{j}] must have the COCO fields "
                       f"{ANNOTATION_KEYS}; missing {missing}.")
    if int(ann["category_id"]) < 1 or ann["iscrowd"] not in (0, 1):
      raise ValueError(f"{name}.annotations[{j}] needs category_id >= 1 and iscrowd 0 "
                       f"or 1; got {ann['category_id']!r}, {ann['iscrowd']!r}.")
  return original


def prompt_ious(ground_truth: Instances, predictions: Instances) -> np.ndarray:
  """IoU of predicted mask m with ground-truth mask m, for every valid ground-truth
  slot (box-prompted predictions: slot m answers prompt m). (B, M, H, W) twice ->
  (N,) float64, N the number of valid slots, in batch-major order; 0 where both
  masks are empty."""
  truth = np.asarray(ground_truth.masks).astype(bool)
  pred = np.asarray(predictions.masks).astype(bool)
  if pred.shape != truth.shape:
    raise ValueError(f"predictions.masks must have the ground truth's shape {truth.shape} "
                     f"(one prediction per prompt); got {pred.shape}.")
  valid = np.asarray(ground_truth.valid).astype(bool)
  inter = np.sum(truth & pred, axis=(-2, -1))[valid]
  union = np.sum(truth | pred, axis=(-2, -1))[valid]
  return inter / np.maximum(union, 1)


class CocoEvaluator:
  """Accumulates batches of ground truth and predictions; :meth:`compute` scores them.

  Masks are RLE-encoded as they arrive, so a whole validation set fits in memory.

  >>> import numpy as np
  >>> from canon_jax.segmentation import Instances
  >>> m = np.zeros((1, 1, 8, 8), bool); m[0, 0, 2:6, 2:6] = True
  >>> gt = Instances(m, np.array([[[2., 2., 6., 6.]]]), np.ones((1, 1), int),
  ...                np.ones((1, 1), bool))
  >>> ev = CocoEvaluator()
  >>> ev.add(gt, gt._replace(scores=np.ones((1, 1))))
  >>> round(ev.compute()["segm/AP"], 6)
  1.0

  Attributes:
    iou_types: "segm" (mask IoU) and/or "bbox" (box IoU).
  """

  def __init__(self, iou_types: Sequence[str] = IOU_TYPES):
    unknown = [t for t in iou_types if t not in IOU_TYPES]
    if unknown or not iou_types:
      raise ValueError(f"iou_types must be a non-empty subset of {IOU_TYPES}; got "
                       f"{tuple(iou_types)!r}.")
    self.iou_types = tuple(iou_types)
    self._mask_utils = _pycocotools()[0]
    self._images: list[dict[str, Any]] = []
    self._ground_truth: list[dict[str, Any]] = []
    self._predictions: list[dict[str, Any]] = []

  def _encode(self, masks: np.ndarray) -> list[dict[str, Any]]:
    """(N, H, W) bool -> N compressed RLEs."""
    if not len(masks):
      return []
    return self._mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))

  def _add_image(self, height: int, width: int, annotations: Sequence[dict[str, Any]],
                 masks: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                 scores: np.ndarray) -> None:
    """One image: COCO-format ground truth and K predictions ((K, H, W) masks)."""
    image_id = len(self._images) + 1
    self._images.append({"id": image_id, "height": int(height), "width": int(width)})
    for ann in annotations:
      self._ground_truth.append({**{k: ann[k] for k in ANNOTATION_KEYS},
                                 "id": len(self._ground_truth) + 1, "image_id": image_id})
    for rle, box, label, score in zip(self._encode(masks), boxes, labels, scores):
      self._predictions.append({
          "image_id": image_id, "category_id": int(label), "score": float(score),
          "bbox": _xywh(box), "segmentation": rle})

  def add(self, ground_truth: Instances, predictions: Instances) -> None:
    """Adds a batch of B images, scored on the images the model saw.

    Args:
      ground_truth: masks (B, M, H, W) bool, boxes (B, M, 4) xyxy pixel-edge,
        labels (B, M) category ids >= 1, valid (B, M); no scores needed. No crowd
        regions (see :meth:`add_original`).
      predictions: the same fields for (B, K) predictions, plus scores (B, K).
        Slots with ``valid`` False are ignored on both sides.
    """
    gt = _as_numpy(ground_truth, "ground_truth", need_scores=False)
    pred = _as_numpy(predictions, "predictions", need_scores=True)
    if gt.masks.shape[0] != pred.masks.shape[0] or gt.masks.shape[2:] != pred.masks.shape[2:]:
      raise ValueError(f"predictions must cover the same images as ground_truth: masks "
                       f"(B, K, H, W) with (B, H, W) of ground_truth "
                       f"{gt.masks.shape[:1] + gt.masks.shape[2:]}; got "
                       f"{pred.masks.shape}.")
    h, w = gt.masks.shape[2:]
    for b in range(gt.masks.shape[0]):
      keep = np.flatnonzero(gt.valid[b])
      annotations = [
          {"category_id": int(gt.labels[b, i]), "iscrowd": 0,
           "area": float(gt.masks[b, i].sum()), "bbox": _xywh(gt.boxes[b, i]),
           "segmentation": rle}
          for i, rle in zip(keep, self._encode(gt.masks[b, keep]))]
      keep = np.flatnonzero(pred.valid[b])
      self._add_image(h, w, annotations, pred.masks[b, keep], pred.boxes[b, keep],
                      pred.labels[b, keep], pred.scores[b, keep])

  def add_original(self, originals: Sequence[OriginalImage], predictions: Instances) -> None:
    """Adds a batch of B images, scored in their original coordinates.

    Args:
      originals: B :class:`OriginalImage`: each image's size and annotations (crowd
        regions are ignore regions, areas are original pixels).
      predictions: masks (B, K, S, S), boxes (B, K, 4), labels, valid and scores
        (B, K) on the square model inputs; mapped back with
        :func:`square_to_original`. Slots with ``valid`` False are ignored.
    """
    pred = _as_numpy(predictions, "predictions", need_scores=True)
    if len(originals) != pred.masks.shape[0]:
      raise ValueError(f"originals must describe the B = {pred.masks.shape[0]} images of "
                       f"predictions; got {len(originals)}.")
    for b, original in enumerate(originals):
      original = _check_original(original, f"originals[{b}]")
      keep = np.flatnonzero(pred.valid[b])
      masks, boxes = square_to_original(pred.masks[b, keep], pred.boxes[b, keep],
                                        original.height, original.width)
      self._add_image(original.height, original.width, original.annotations, masks, boxes,
                      pred.labels[b, keep], pred.scores[b, keep])

  def compute(self) -> dict[str, float]:
    """``{"segm/AP": ..., "bbox/AP50": ..., ...}`` over everything added so far."""
    if not any(not a["iscrowd"] for a in self._ground_truth):
      raise ValueError("ground truth must hold at least one valid non-crowd instance; got "
                       "none.")
    _, coco_cls, coco_eval_cls = _pycocotools()
    categories = sorted({a["category_id"] for a in self._ground_truth + self._predictions})
    results = {}
    with contextlib.redirect_stdout(io.StringIO()):
      gt = coco_cls()
      gt.dataset = {"images": list(self._images), "annotations": list(self._ground_truth),
                    "categories": [{"id": c} for c in categories]}
      gt.createIndex()
      for iou_type in self.iou_types:
        if self._predictions:
          # loadRes takes the box from "bbox" and the mask from "segmentation":
          # give it only the one being scored.
          drop = "bbox" if iou_type == "segm" else "segmentation"
          dets = gt.loadRes([{k: v for k, v in p.items() if k != drop}
                             for p in self._predictions])
        else:  # loadRes rejects an empty list; nothing detected scores 0
          dets = coco_cls()
          dets.dataset = {**gt.dataset, "annotations": []}
          dets.createIndex()
        evaluator = coco_eval_cls(gt, dets, iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        stats = np.where(evaluator.stats < 0, np.nan, evaluator.stats)
        results.update({f"{iou_type}/{n}": float(s) for n, s in zip(STAT_NAMES, stats)})
    return results


def coco_map(ground_truth: Instances, predictions: Instances,
             iou_types: Sequence[str] = IOU_TYPES) -> dict[str, float]:
  """COCO metrics of one padded batch: see :class:`CocoEvaluator` and the module doc."""
  evaluator = CocoEvaluator(iou_types)
  evaluator.add(ground_truth, predictions)
  return evaluator.compute()


class GroupAveragedMap(NamedTuple):
  """What :func:`group_averaged_map` returns.

  Attributes:
    mean: each metric averaged over the |G| poses (the "C4-averaged mAP").
    per_element: |G| metric dicts; ``per_element[0]`` is the plain (upright) score.
  """
  mean: dict[str, float]
  per_element: list[dict[str, float]]


SegmentFn = Callable[[Any, Instances], Instances]
"""``segment_fn(images (B, S, S, C), prompts) -> predictions`` on those images;
a box-prompted model takes ``prompts.boxes`` as prompts (and their labels)."""


def group_averaged_map(segment_fn: SegmentFn, batches: Iterable[tuple[Any, ...]],
                       group="C4", iou_types: Sequence[str] = IOU_TYPES,
                       prompted: bool = False) -> GroupAveragedMap:
  """COCO metrics at every pose ``g . x`` of every image, and their mean over G.

  Args:
    segment_fn: predicts instances for a batch of images (see :data:`SegmentFn`).
    batches: read once; each is either ``(images (B, S, S, C), ground_truth
      Instances)``, scored on the images themselves, or ``(images, prompts
      Instances, originals)`` with B :class:`OriginalImage`, scored in the original
      coordinates against ``originals``' annotations (:meth:`CocoEvaluator.add_original`).
    group: the group (or its name) whose elements are the poses.
    iou_types: "segm" and/or "bbox".
    prompted: prediction slot m answers prompt m (a box-prompted model); each pose's
      metrics then also hold ``"segm/prompt_mIoU"``, the mean IoU of each valid
      prompt's predicted mask with the prompt's own mask on the model input
      (:func:`prompt_ious`).

  Returns:
    A :class:`GroupAveragedMap`.
  """
  group = from_name(group)
  evaluators = [CocoEvaluator(iou_types) for _ in range(group.order)]
  ious: list[list[np.ndarray]] = [[] for _ in range(group.order)]
  for batch in batches:
    if len(batch) not in (2, 3):
      raise ValueError(f"batches must yield (images, ground_truth) or (images, prompts, "
                       f"originals); got a tuple of {len(batch)}.")
    images, truth = batch[:2]
    for g, evaluator in enumerate(evaluators):
      elements = np.full((np.shape(images)[0],), g, np.int32)
      moved_images = transforms.transform_images(images, group, elements)
      predictions = segment_fn(moved_images, transform_instances(truth, group, elements))
      predictions = transform_instances(predictions, group, group.inverse(elements))
      if len(batch) == 3:
        evaluator.add_original(batch[2], predictions)
      else:
        evaluator.add(truth, predictions)
      if prompted:
        ious[g].append(prompt_ious(truth, predictions))
  per_element = [e.compute() for e in evaluators]
  if prompted:
    for metrics, values in zip(per_element, ious):
      metrics["segm/prompt_mIoU"] = float(np.mean(np.concatenate(values)))
  mean = {k: float(np.mean([p[k] for p in per_element])) for k in per_element[0]}
  return GroupAveragedMap(mean, per_element)
