"""COCO instance annotations (``instances_*.json`` + image folder) as padded batches.

TFDS's ``coco/2017`` holds boxes and labels but no instance masks, which mask AP needs,
so evaluation reads the official annotation file with pycocotools (the ``coco``
extra) and the images from their folder (``val2017/``). Every image becomes a square
example for the equivariant pipeline (C4/D4 rotations need square images):

* the image is resized so that its longer side is ``image_size`` (bilinear, with
  antialiasing when shrinking) and zero-padded at the bottom and right to
  ``image_size x image_size`` (SAM's own layout), RGB float32 in [0, 1];
* each non-crowd annotation gives a prompt: a mask (``COCO.annToMask`` of its
  polygons or RLE, resized with nearest-neighbour sampling at pixel centres and
  padded alike), its box (the annotation's ``bbox``, xywh, scaled, converted to
  xyxy pixel-edge coordinates and rounded to a multiple of 1 / :data:`BOX_GRID`
  pixel) and its category id (COCO's, >= 1); prompts are padded to
  ``max_instances`` slots (``valid`` marks the real ones);
* the image's original size and all its annotations as the file gives them, crowd
  regions included, for scoring in original coordinates
  (:class:`canon_jax.coco_eval.OriginalImage`).

Batches ``(images, prompts, originals)`` are the input of
:func:`canon_jax.coco_eval.group_averaged_map`.
"""
from __future__ import annotations

import contextlib
import io
import os
from typing import Iterator, Sequence

import numpy as np

from canon_jax.coco_eval import ANNOTATION_KEYS, OriginalImage, resize_masks_nearest
from canon_jax.data.image_ops import longest_side_shape, resize_longest_side_and_pad
from canon_jax.segmentation import Instances


BOX_GRID = 64
"""Prompt boxes are multiples of 1 / BOX_GRID pixel (at most 1/128 pixel off). On such
a grid every rotation by 90 degrees and flip of the S x S example moves a box exactly
in float32 (for S up to 2^24 / BOX_GRID), so at every pose of the C4 / D4 protocol the
canonicalized prompts reach the predictor as the same numbers; arbitrary fractions
would pick up rounding errors on the way (``x - S/2`` is inexact)."""


def _coco_api():
  try:
    from pycocotools.coco import COCO  # pylint: disable=import-outside-toplevel
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("Reading COCO annotations needs pycocotools: "
                      "pip install -e '.[coco]'.") from e
  return COCO


class CocoInstances:
  """Random access to the images and instance annotations of a COCO-style split.

  Args:
    annotation_file: an ``instances_*.json`` (COCO format: images, annotations with
      ``segmentation`` polygons or RLE, ``bbox``, ``category_id``, ``iscrowd``).
    image_dir: the folder holding the images named by ``file_name``.
    image_size: side S of the square examples.
    max_instances: instance slots M per image; ``None``: the largest number of
      non-crowd annotations of any selected image. Images with more keep the M
      largest (by area).
    image_ids: the images to use, in this order (default: every image with at least
      one non-crowd annotation, sorted by id).

  ``dataset[i]`` is ``(image (S, S, 3) float32, prompts, original)``: the prompts are
  :class:`~canon_jax.segmentation.Instances` of one image on the S x S example (masks
  (M, S, S) bool, boxes (M, 4) float32, labels (M,) int32, valid (M,) bool), the
  original an :class:`~canon_jax.coco_eval.OriginalImage` (size and every annotation,
  crowd regions included, in original pixels).
  """

  def __init__(self, annotation_file: str, image_dir: str, *, image_size: int = 1024,
               max_instances: int | None = None, image_ids: Sequence[int] | None = None):
    if not os.path.isfile(annotation_file):
      raise ValueError(f"annotation_file={annotation_file!r} does not exist (COCO's "
                       "annotations/instances_val2017.json, from cocodataset.org).")
    if not os.path.isdir(image_dir):
      raise ValueError(f"image_dir={image_dir!r} is not a directory (COCO's val2017/).")
    if not isinstance(image_size, int) or image_size < 8:
      raise ValueError(f"image_size must be an integer >= 8; got {image_size!r}.")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
      self.coco = _coco_api()(annotation_file)
    self.image_dir = image_dir
    self.image_size = image_size
    if image_ids is None:
      image_ids = [i for i in sorted(self.coco.getImgIds()) if self._annotations(i)]
    unknown = [i for i in image_ids if i not in self.coco.imgs]
    if unknown:
      raise ValueError(f"image_ids not in {annotation_file}: {unknown[:5]}")
    self.image_ids = list(image_ids)
    if max_instances is None:
      max_instances = max([len(self._annotations(i)) for i in self.image_ids] or [1])
    if max_instances < 1:
      raise ValueError(f"max_instances must be >= 1; got {max_instances}.")
    self.max_instances = int(max_instances)

  def _annotations(self, image_id: int) -> list[dict]:
    """The non-crowd annotations (the prompts), largest first."""
    anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id], iscrowd=False))
    return sorted(anns, key=lambda a: -float(a.get("area", 0.0)))

  def original(self, index: int) -> OriginalImage:
    """Size and annotations (crowd regions included) of image ``index`` as in the file."""
    info = self.coco.imgs[self.image_ids[index]]
    annotations = []
    for ann in self.coco.loadAnns(self.coco.getAnnIds(imgIds=[info["id"]])):
      ann = {"iscrowd": 0, **ann}
      missing = [k for k in ANNOTATION_KEYS if k not in ann]
      if missing:
        raise ValueError(f"annotation {ann.get('id')!r} of image {info['id']} lacks the "
                         f"COCO fields {missing}.")
      annotations.append({k: ann[k] for k in ANNOTATION_KEYS})
    return OriginalImage(int(info["height"]), int(info["width"]), tuple(annotations))

  def __len__(self) -> int:
    return len(self.image_ids)

  def __getitem__(self, index: int) -> tuple[np.ndarray, Instances, OriginalImage]:
    from PIL import Image  # pylint: disable=import-outside-toplevel
    info = self.coco.imgs[self.image_ids[index]]
    with Image.open(os.path.join(self.image_dir, info["file_name"])) as im:
      image = np.asarray(im.convert("RGB"), np.float32) / 255.0
    h, w = image.shape[:2]
    original = self.original(index)
    if (h, w) != (original.height, original.width):
      raise ValueError(f"{info['file_name']} is {h} x {w} pixels but the annotation file "
                       f"says height={original.height}, width={original.width}.")
    s = self.image_size
    nh, nw = longest_side_shape(h, w, s)
    out = resize_longest_side_and_pad(image, s)

    m = self.max_instances
    masks = np.zeros((m, s, s), bool)
    boxes = np.zeros((m, 4), np.float32)
    labels = np.zeros((m,), np.int32)
    valid = np.zeros((m,), bool)
    for j, ann in enumerate(self._annotations(info["id"])[:m]):
      mask = self.coco.annToMask(ann).astype(bool)
      masks[j, :nh, :nw] = resize_masks_nearest(mask, nh, nw)
      x, y, bw, bh = ann["bbox"]
      scaled = np.asarray([x, y, x + bw, y + bh]) * [nw / w, nh / h, nw / w, nh / h]
      boxes[j] = np.round(scaled * BOX_GRID) / BOX_GRID
      labels[j] = int(ann["category_id"])
      valid[j] = True
    return out, Instances(masks=masks, boxes=boxes, labels=labels, valid=valid), original

  def batches(self, batch_size: int
              ) -> Iterator[tuple[np.ndarray, Instances, list[OriginalImage]]]:
    """``(images (B, S, S, 3), prompts with a leading batch axis, B originals)``, in
    order; the last batch may be smaller."""
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    for start in range(0, len(self), batch_size):
      items = [self[i] for i in range(start, min(start + batch_size, len(self)))]
      images = np.stack([im for im, _, _ in items])
      prompts = Instances(*(np.stack([inst[k] for _, inst, _ in items]) for k in range(4)))
      yield images, prompts, [original for _, _, original in items]
