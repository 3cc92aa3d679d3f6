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

The G-averaged protocol (:func:`group_averaged_map`; "C4-averaged mAP" in the
paper): every image is evaluated at all |G| poses ``g . x`` against its ground truth
moved by g, and the |G| APs are averaged. Unlike equiadapt's example, which compares
predictions made in the canonical frame with the untransformed ground truth,
predictions here are mapped back to the input frame (:mod:`canon_jax.segmentation`)
and compared with the transformed ground truth, so the number measures the model's
equivariance rather than whether the canonicalizer happens to choose upright.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np

from canon_jax import transforms
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

  def add(self, ground_truth: Instances, predictions: Instances) -> None:
    """Adds a batch of B images.

    Args:
      ground_truth: masks (B, M, H, W) bool, boxes (B, M, 4) xyxy pixel-edge,
        labels (B, M) category ids >= 1, valid (B, M); no scores needed.
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
      image_id = len(self._images) + 1
      self._images.append({"id": image_id, "height": h, "width": w})
      keep = np.flatnonzero(gt.valid[b])
      for i, rle in zip(keep, self._encode(gt.masks[b, keep])):
        self._ground_truth.append({
            "id": len(self._ground_truth) + 1, "image_id": image_id,
            "category_id": int(gt.labels[b, i]), "iscrowd": 0,
            "area": float(gt.masks[b, i].sum()), "bbox": _xywh(gt.boxes[b, i]),
            "segmentation": rle})
      keep = np.flatnonzero(pred.valid[b])
      for i, rle in zip(keep, self._encode(pred.masks[b, keep])):
        self._predictions.append({
            "image_id": image_id, "category_id": int(pred.labels[b, i]),
            "score": float(pred.scores[b, i]), "bbox": _xywh(pred.boxes[b, i]),
            "segmentation": rle})

  def compute(self) -> dict[str, float]:
    """``{"segm/AP": ..., "bbox/AP50": ..., ...}`` over everything added so far."""
    if not self._ground_truth:
      raise ValueError("ground truth must hold at least one valid instance; got none.")
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
"""``segment_fn(images (B, H, W, C), ground_truth) -> predictions`` in the input frame;
a box-prompted model takes ``ground_truth.boxes`` as prompts (and its labels)."""


def group_averaged_map(segment_fn: SegmentFn,
                       batches: Iterable[tuple[Any, Instances]], group="C4",
                       iou_types: Sequence[str] = IOU_TYPES) -> GroupAveragedMap:
  """COCO metrics at every pose ``g . x`` of every image, and their mean over G.

  Args:
    segment_fn: predicts instances for a batch of images (see :data:`SegmentFn`).
    batches: ``(images (B, H, W, C), ground_truth Instances)`` pairs, read once.
    group: the group (or its name) whose elements are the poses.
    iou_types: "segm" and/or "bbox".

  Returns:
    A :class:`GroupAveragedMap`.
  """
  group = from_name(group)
  evaluators = [CocoEvaluator(iou_types) for _ in range(group.order)]
  for images, ground_truth in batches:
    for g, evaluator in enumerate(evaluators):
      elements = np.full((np.shape(images)[0],), g, np.int32)
      moved_images = transforms.transform_images(images, group, elements)
      moved_truth = transform_instances(ground_truth, group, elements)
      evaluator.add(moved_truth, segment_fn(moved_images, moved_truth))
  per_element = [e.compute() for e in evaluators]
  mean = {k: float(np.mean([p[k] for p in per_element])) for k in per_element[0]}
  return GroupAveragedMap(mean, per_element)
