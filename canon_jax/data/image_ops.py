"""Host-side (NumPy) image operations used by the input pipeline.

Images here are single examples, ``(H, W, C)`` float arrays (channels last),
processed on the host inside the data pipeline, before batching. Device-side
rotations for canonicalization live elsewhere in canon_jax and act on NHWC batches.

Conventions (the same as the rest of canon_jax):

* Pixel ``(row, col)`` has its centre at integer coordinates; the image centre
  is ``((H - 1) / 2, (W - 1) / 2)``.
* A positive angle (radians) rotates the picture counter-clockwise as displayed
  (row 0 at the top), so ``rotate_image(x, pi / 2)`` equals ``np.rot90(x)``.
"""
from __future__ import annotations

import numpy as np


def _check_hwc(image: np.ndarray, name: str) -> None:
  if np.ndim(image) != 3:
    raise ValueError(
        f"{name} must have rank 3 (H, W, C: one image, channels last); got "
        f"shape {np.shape(image)}.")


def _linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) weights of a triangle-kernel (bilinear) resampler.

  Half-pixel centres; when downsampling the kernel widens by ``n_in / n_out``
  (antialiasing). Rows sum to 1. This is the 1-D kernel of
  ``jax.image.resize(..., method="linear")``.
  """
  scale = n_out / n_in
  kernel_scale = max(1.0 / scale, 1.0)
  centres = (np.arange(n_out) + 0.5) / scale - 0.5
  dist = (np.arange(n_in)[None, :] - centres[:, None]) / kernel_scale
  weights = np.maximum(0.0, 1.0 - np.abs(dist))
  return weights / weights.sum(axis=1, keepdims=True)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of one image (antialiased when shrinking).

  Args:
    image: ``(H, W, C)`` array, any real dtype.
    height: output height, >= 1.
    width: output width, >= 1.

  Returns:
    ``(height, width, C)`` float32 array. Matches
    ``jax.image.resize(image, (height, width, C), "linear")``; values stay within
    the input's range (the weights are a convex combination).
  """
  _check_hwc(image, "image")
  if height < 1 or width < 1:
    raise ValueError(
        f"height and width must be >= 1; got height={height}, width={width}.")
  x = np.asarray(image, np.float32)
  rows = _linear_resize_matrix(x.shape[0], height).astype(np.float32)
  cols = _linear_resize_matrix(x.shape[1], width).astype(np.float32)
  return np.einsum("hy,yxc,wx->hwc", rows, x, cols)


def longest_side_shape(height: int, width: int, target: int) -> tuple[int, int]:
  """(H, W) scaled so that the longer side is ``target``, rounded half up (SAM's)."""
  scale = target / max(height, width)
  return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side_and_pad(image: np.ndarray, size: int) -> np.ndarray:
  """(H, W, C) in [0, 1] -> (size, size, C) float32: the longer side resized to
  ``size`` (:func:`resize_image`, clipped to [0, 1]), zero padding at the bottom and
  right (SAM's layout). The content occupies ``longest_side_shape(H, W, size)``."""
  _check_hwc(image, "image")
  nh, nw = longest_side_shape(image.shape[0], image.shape[1], size)
  out = np.zeros((size, size, image.shape[2]), np.float32)
  out[:nh, :nw] = np.clip(resize_image(image, nh, nw), 0.0, 1.0)
  return out


def rotate_image(image: np.ndarray, angle: float) -> np.ndarray:
  """Rotates one image counter-clockwise by ``angle`` radians about its centre.

  Bilinear interpolation; points that come from outside the image are 0 (use it
  for images on a black background, such as MNIST digits). Multiples of pi/2
  reproduce ``np.rot90`` up to float rounding (about 1e-6) on square images.

  Args:
    image: ``(H, W, C)`` array, any real dtype.
    angle: rotation angle in radians, counter-clockwise as displayed.

  Returns:
    ``(H, W, C)`` float32 array.
  """
  _check_hwc(image, "image")
  x = np.asarray(image, np.float32)
  h, w = x.shape[:2]
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
  # Output pixel -> source pixel: rotate by -angle in (x right, y up) coordinates.
  dx, dy = cols - cx, cy - rows
  cos, sin = np.cos(angle), np.sin(angle)
  src_col = cx + cos * dx + sin * dy
  src_row = cy - (-sin * dx + cos * dy)
  # A one-pixel zero border makes every out-of-range sample read zeros.
  padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
  r = np.clip(src_row + 1.0, 0.0, h + 1.0)
  c = np.clip(src_col + 1.0, 0.0, w + 1.0)
  r0 = np.minimum(np.floor(r).astype(np.int64), h)
  c0 = np.minimum(np.floor(c).astype(np.int64), w)
  fr = (r - r0)[..., None].astype(np.float32)
  fc = (c - c0)[..., None].astype(np.float32)
  top = padded[r0, c0] * (1 - fc) + padded[r0, c0 + 1] * fc
  bottom = padded[r0 + 1, c0] * (1 - fc) + padded[r0 + 1, c0 + 1] * fc
  return top * (1 - fr) + bottom * fr
