"""Synthetic instance segmentation: coloured shapes with instance masks and boxes.

A tiny COCO-like set the project makes itself (no download), for end-to-end tests
and demos of the segmentation pipeline (:mod:`canon_jax.segmentation`,
:mod:`canon_jax.coco_eval`). Each image has 1 to ``max_instances`` filled shapes
of five classes on a smooth, lightly noisy background::

  1 disk       2 bar (2.2:1 rectangle)   3 triangle (apex up)
  4 ell (L)    5 arrow (pointing up)

Most classes have a distinguished "upright" pose; every shape is rotated about its
centre by an angle drawn uniformly in ``[-max_angle, max_angle]`` (mostly upright, as
objects in photos are). Later shapes occlude earlier ones; masks are the *visible*
pixels (as in COCO), instances left with fewer than ``min_area`` visible pixels are
dropped. Boxes are the tight xyxy pixel-edge boxes of the visible masks.

Generation is deterministic: image ``i`` depends only on ``(seed, i)``.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from canon_jax.segmentation import Instances

CLASS_NAMES = ("disk", "bar", "triangle", "ell", "arrow")
"""Category ``k + 1`` is ``CLASS_NAMES[k]`` (0 is reserved for padding)."""


def _inside(cls: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Membership of points (u right, v down, shape radius 1) in upright class ``cls``."""
  if cls == 0:
    return u * u + v * v <= 1.0
  if cls == 1:
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.45)
  if cls == 2:
    return (v >= -1.0) & (v <= 0.8) & (np.abs(u) <= 0.5 * (v + 1.0))
  if cls == 3:
    return (((u >= -0.8) & (u <= -0.3) & (np.abs(v) <= 1.0))
            | ((np.abs(u) <= 0.8) & (v >= 0.5) & (v <= 1.0)))
  if cls == 4:
    shaft = (np.abs(u) <= 0.25) & (v >= -0.2) & (v <= 1.0)
    head = (v >= -1.0) & (v < -0.2) & (np.abs(u) <= 0.875 * (v + 1.0))
    return shaft | head
  raise ValueError(f"cls must be in [0, {len(CLASS_NAMES)}); got {cls}.")


def _tight_boxes(masks: np.ndarray) -> np.ndarray:
  """(M, H, W) bool -> (M, 4) float32 xyxy pixel-edge boxes (zeros when empty)."""
  boxes = np.zeros((masks.shape[0], 4), np.float32)
  for i, m in enumerate(masks):
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    if rows.size:
      boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
  return boxes


@dataclasses.dataclass(frozen=True)
class SyntheticInstances:
  """A generated set.

  Attributes:
    images: (N, S, S, 3) float32 RGB in [0, 1], NHWC.
    instances: ground truth as numpy :class:`~canon_jax.segmentation.Instances`:
      masks (N, M, S, S) bool, boxes (N, M, 4) float32, labels (N, M) int32 in
      1..5 (0 for padding), valid (N, M) bool; ``M = max_instances``.
    angles: (N, M) float32 rotation of each shape, radians, counter-clockwise as
      displayed (0 for padding).
  """
  images: np.ndarray
  instances: Instances
  angles: np.ndarray

  def __len__(self) -> int:
    return self.images.shape[0]

  def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, Instances]]:
    """Yields ``(images, instances)`` slices of at most ``batch_size`` images, in order."""
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    for start in range(0, len(self), batch_size):
      part = slice(start, start + batch_size)
      yield self.images[part], Instances(*(f[part] for f in self.instances[:4]))


def _render(rng: np.random.Generator, size: int, max_instances: int, max_angle: float,
            min_area: int):
  """One image: (S, S, 3) image, (M, S, S) masks, (M,) labels, (M,) angles, valid count."""
  rows, cols = np.mgrid[:size, :size] + 0.5  # pixel centres, pixel-edge coordinates
  base = rng.uniform(0.2, 0.8, 3)
  slope = rng.normal(0.0, 0.15, (2, 3))
  image = (base + slope[0] * (rows[..., None] / size - 0.5)
           + slope[1] * (cols[..., None] / size - 0.5))
  image = image + rng.normal(0.0, 0.02, image.shape)
  count = int(rng.integers(1, max_instances + 1))
  masks, labels, angles = [], [], []
  for _ in range(count):
    cls = int(rng.integers(len(CLASS_NAMES)))
    radius = rng.uniform(0.12, 0.25) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    angle = rng.uniform(-max_angle, max_angle)
    # A displayed counter-clockwise rotation by `angle` maps the upright (u, v) to
    # (u cos + v sin, -u sin + v cos); invert it for every pixel centre.
    du, dv = (cols - cx) / radius, (rows - cy) / radius
    c, s = np.cos(angle), np.sin(angle)
    mask = _inside(cls, du * c - dv * s, du * s + dv * c)
    color = rng.uniform(0.0, 1.0, 3)
    while np.abs(color - base).max() < 0.35:
      color = rng.uniform(0.0, 1.0, 3)
    texture = rng.normal(0.0, 0.03, image.shape)
    image = np.where(mask[..., None], color + texture, image)
    masks = [m & ~mask for m in masks] + [mask]
    labels.append(cls + 1)
    angles.append(angle)
  keep = [i for i, m in enumerate(masks) if m.sum() >= min_area]
  out_masks = np.zeros((max_instances, size, size), bool)
  out_labels = np.zeros((max_instances,), np.int32)
  out_angles = np.zeros((max_instances,), np.float32)
  for j, i in enumerate(keep):
    out_masks[j], out_labels[j], out_angles[j] = masks[i], labels[i], angles[i]
  return (np.clip(image, 0.0, 1.0).astype(np.float32), out_masks, out_labels, out_angles,
          len(keep))


def make_synthetic_instances(num_images: int, image_size: int = 64, max_instances: int = 4,
                             seed: int = 0, max_angle: float = np.pi / 12,
                             min_area: int = 12) -> SyntheticInstances:
  """Generates ``num_images`` images of coloured, mostly upright shapes.

  Args:
    num_images: N.
    image_size: side S of the square images (pixels).
    max_instances: M, the most shapes per image (and the padded instance axis).
    seed: generation seed; image i depends only on ``(seed, i)``.
    max_angle: shapes are rotated by angles uniform in ``[-max_angle, max_angle]``
      radians (pi for uniformly random orientations).
    min_area: instances with fewer visible pixels are dropped.

  Returns:
    A :class:`SyntheticInstances`.

  >>> d = make_synthetic_instances(2, image_size=32, max_instances=3, seed=1)
  >>> d.images.shape, d.instances.masks.shape, d.instances.boxes.shape
  ((2, 32, 32, 3), (2, 3, 32, 32), (2, 3, 4))
  """
  if num_images < 1 or image_size < 8 or max_instances < 1:
    raise ValueError(f"num_images >= 1, image_size >= 8 and max_instances >= 1 are "
                     f"required; got {num_images}, {image_size}, {max_instances}.")
  images, masks, labels, angles, valid = [], [], [], [], []
  for i in range(num_images):
    rng = np.random.default_rng([seed, i])
    img, m, lab, ang, n = _render(rng, image_size, max_instances, max_angle, min_area)
    images.append(img)
    masks.append(m)
    labels.append(lab)
    angles.append(ang)
    valid.append(np.arange(max_instances) < n)
  masks = np.stack(masks)
  boxes = np.stack([_tight_boxes(m) for m in masks])
  instances = Instances(masks, boxes, np.stack(labels), np.stack(valid))
  return SyntheticInstances(np.stack(images), instances, np.stack(angles))
