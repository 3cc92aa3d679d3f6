"""Actions of C_n / D_n (and of continuous rotations) on images, label maps, boxes and
feature maps.

Conventions (see :mod:`canon_jax.groups`):

* Images are NHWC. Element ``g = (k, flip)`` acts as "mirror the width axis (if
  flip), then rotate counter-clockwise (as displayed) by ``2*pi*k/n``" about the image
  centre ``((H-1)/2, (W-1)/2)`` in pixel-centre coordinates.
* Rotations by multiples of 90 degrees are exact index permutations (``jnp.rot90``);
  any other angle resamples bilinearly (nearest for label maps). Samples that fall
  outside the image take the value of the nearest edge pixel: this equals
  equiadapt's "edge-pad by ceil(W/2), rotate, centre-crop", since a rotated square
  never reaches beyond that padding.
* Groups with rotations other than 0 and 180 degrees need square images.
* Boxes are ``(x_min, y_min, x_max, y_max)`` in pixel-edge coordinates (pixel
  ``(r, c)`` covers ``[c, c+1) x [r, r+1)``), so the centre is ``(W/2, H/2)``.
  A transformed box is the axis-aligned box around the transformed corners.
* A ``regular`` feature map has shape (B, H, W, C, |G|): the group acts spatially
  and permutes the last axis, ``(g . f)[..., h] = f[..., g^-1 h]``. A ``scalar``
  feature map (B, H, W, C) is only transformed spatially.
"""
from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from canon_jax import _checks
from canon_jax.groups import DiscreteGroup, from_name

Representation = Literal["regular", "scalar"]


# ----------------------------------------------------------------------------------
# Spatial resampling (private): works on (B, H, W, ...) arrays.
# ----------------------------------------------------------------------------------


def _source_coords(h: int, w: int, cos, sin, flip, xp=jnp):
  """Row/column in the input sampled by every output pixel: each (B, H, W).

  Output pixel q (centred coords u right, v down) reads the input at
  F^flip R_{-theta} q, the inverse of "flip, then rotate counter-clockwise".
  ``xp`` is ``jnp`` (traced) or ``np`` (constants computed once, e.g. filter bases).
  """
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  v, u = xp.meshgrid(xp.arange(h) - cy, xp.arange(w) - cx, indexing="ij")
  cos, sin = cos[:, None, None], sin[:, None, None]
  su = u * cos - v * sin
  sv = u * sin + v * cos
  su = xp.where(flip[:, None, None], -su, su)
  return sv + cy, su + cx


def _gather(flat, rows, cols, w):
  """flat (B, H*W, D), integer rows/cols (B, H, W) -> (B, H, W, D)."""
  b, hh, ww = rows.shape
  idx = (rows * w + cols).reshape(b, hh * ww, 1)
  return jnp.take_along_axis(flat, idx, axis=1).reshape(b, hh, ww, -1)


@functools.partial(jax.jit, static_argnames=("method",))
def _resample(y, cos, sin, flip, method: str):
  """Rotates (B, H, W, ...) about the centre; ``cos, sin, flip`` are (B,)."""
  b, h, w = y.shape[:3]
  rest = y.shape[3:]
  flat = y.reshape(b, h * w, -1)
  r, c = _source_coords(h, w, cos, sin, flip)
  r = jnp.clip(r, 0, h - 1)
  c = jnp.clip(c, 0, w - 1)
  if method == "nearest":
    out = _gather(flat, jnp.round(r).astype(jnp.int32), jnp.round(c).astype(jnp.int32), w)
    return out.reshape(y.shape)
  r0 = jnp.floor(r)
  c0 = jnp.floor(c)
  fr = (r - r0)[..., None].astype(y.dtype)
  fc = (c - c0)[..., None].astype(y.dtype)
  r0 = r0.astype(jnp.int32)
  c0 = c0.astype(jnp.int32)
  r1 = jnp.minimum(r0 + 1, h - 1)
  c1 = jnp.minimum(c0 + 1, w - 1)
  out = ((1 - fr) * ((1 - fc) * _gather(flat, r0, c0, w) + fc * _gather(flat, r0, c1, w))
         + fr * ((1 - fc) * _gather(flat, r1, c0, w) + fc * _gather(flat, r1, c1, w)))
  return out.reshape((b, h, w) + rest)


def _exact(y, k: int, flip: bool, axes: tuple[int, int] = (1, 2)):
  """Static element on the two spatial ``axes`` (rows, columns): mirror the column
  axis (if flip), then rotate counter-clockwise by k quarter turns."""
  if flip:
    y = jnp.flip(y, axis=axes[1])
  return jnp.rot90(y, k, axes=axes)


def _spatial_copy(y, group: DiscreteGroup, g: int, method: str):
  """The whole batch transformed by the static element ``g``."""
  k, flip = int(group.rotation_index[g]), bool(group.flips[g])
  if (4 * k) % group.n == 0:  # a multiple of 90 degrees (in any group): exact
    return _exact(y, k * 4 // group.n, flip)
  cos, sin = group.cos_sin()
  b = y.shape[0]
  full = lambda v: jnp.full((b,), v, dtype=jnp.float32)
  return _resample(y, full(cos[g]), full(sin[g]), jnp.full((b,), flip), method)


@functools.partial(jax.jit, static_argnames=("group", "method"))
def _spatial(y, group: DiscreteGroup, elements, method: str):
  """Per-sample element: (B, H, W, ...) and (B,) ints. Jitted: one executable per
  shape, so eager calls (notebooks, tests) do not dispatch op by op."""
  if group.exact_on_grid:
    return _all_copies(y, group, method)[elements, jnp.arange(y.shape[0])]
  cos, sin = group.cos_sin()
  return _resample(y, jnp.asarray(cos, jnp.float32)[elements],
                   jnp.asarray(sin, jnp.float32)[elements],
                   jnp.asarray(group.flips)[elements], method)


@functools.partial(jax.jit, static_argnames=("group",))
def _permute_regular(f, group: DiscreteGroup, elements):
  idx = group.regular_permutation(elements)  # (B, |G|)
  idx = idx.reshape((f.shape[0],) + (1,) * (f.ndim - 2) + (group.order,))
  return jnp.take_along_axis(f, idx, axis=-1)


# ----------------------------------------------------------------------------------
# Validation (private)
# ----------------------------------------------------------------------------------


def _check_group(group) -> DiscreteGroup:
  return from_name(group)


def _check_elements(elements, group: DiscreteGroup, batch: int, name="elements"):
  elements = jnp.asarray(elements)
  _checks.check_integer(elements, name)
  _checks.check_rank(elements, name, 1, "B,")
  _checks.check_batch(elements, name, batch)
  if _checks.is_concrete(elements) and elements.size:
    lo, hi = int(elements.min()), int(elements.max())
    if lo < 0 or hi >= group.order:
      raise ValueError(
          f"{name} must lie in [0, {group.order}) for {group.name}; got values in "
          f"[{lo}, {hi}].")
  return elements


def _check_weights(weights, group: DiscreteGroup, batch: int):
  _checks.check_rank(weights, "weights", 2, "B, |G|")
  _checks.check_floating(weights, "weights")
  if weights.shape != (batch, group.order):
    raise ValueError(
        f"weights must have shape (B, |G|) = ({batch}, {group.order}); got "
        f"{weights.shape}.")


def _needs_square(group: DiscreteGroup) -> bool:
  return bool(np.any(np.abs(group.cos_sin()[1]) > 1e-9))


def _check_spatial(y, group, name):
  if _needs_square(group):
    _checks.check_square(y, name)


# ----------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------


def transform_images(images: jax.Array, group, elements: jax.Array, *,
                     check_finite: bool | None = False) -> jax.Array:
  """Applies a per-sample group element to a batch of images.

  Args:
    images: (B, H, W, C) float images, NHWC. Square unless the group only holds
      0/180-degree rotations.
    group: a :class:`DiscreteGroup` or a name such as "C8" or "D4".
    elements: (B,) integer element indices in [0, |G|).
    check_finite: raise ValueError if ``images`` holds NaN/Inf (True: also under
      jit, as a host callback; None: concrete arrays only; False: never).

  Returns:
    (B, H, W, C): ``elements[b] . images[b]``. Exact index permutations for
    multiples of 90 degrees, bilinear resampling otherwise.
  """
  group = _check_group(group)
  _checks.check_nhwc(images)
  _check_spatial(images, group, "images")
  elements = _check_elements(elements, group, images.shape[0])
  _checks.check_finite(images, "images", check_finite)
  return _spatial(images, group, elements, "bilinear")


def all_transforms(images: jax.Array, group) -> jax.Array:
  """Every group element applied to the batch: (|G|, B, H, W, C), copy g = g . images."""
  group = _check_group(group)
  _checks.check_nhwc(images)
  _check_spatial(images, group, "images")
  return _all_copies(images, group, "bilinear")


@functools.partial(jax.jit, static_argnames=("group", "method"))
def _all_copies(y, group: DiscreteGroup, method: str):
  """(|G|, B, H, W, ...): copy g is the batch transformed by g."""
  return jnp.stack([_spatial_copy(y, group, g, method) for g in range(group.order)])


def transform_images_weighted(images: jax.Array, group, weights: jax.Array) -> jax.Array:
  """sum_g weights[b, g] * (g . images[b]): the differentiable form used in training.

  With one-hot ``weights`` this equals :func:`transform_images` at the hot element;
  with straight-through weights (one-hot forward, softmax backward) the task loss's
  gradient reaches the weights. Costs |G| transforms of the batch.

  Args:
    images: (B, H, W, C) float images.
    group: group or name.
    weights: (B, |G|) float weights.
  """
  group = _check_group(group)
  _checks.check_nhwc(images)
  _check_spatial(images, group, "images")
  _check_weights(weights, group, images.shape[0])
  return _weighted_copies(images, group, weights.astype(images.dtype), "bilinear")


@functools.partial(jax.jit, static_argnames=("group", "method"))
def _weighted_copies(y, group: DiscreteGroup, weights, method: str):
  """sum_g weights[:, g] * (g . y) as one sum of the |G| copies, never stacked: on
  XLA:CPU the stacked (|G|, B, ...) copies contracted with the weights made the
  C8 + ResNet50 train step 3.5-4% slower."""
  out = None
  for g in range(group.order):
    w = weights[:, g].reshape((-1,) + (1,) * (y.ndim - 1))
    term = w * _spatial_copy(y, group, g, method)
    out = term if out is None else out + term
  return out


def rotate_images(images: jax.Array, angles: jax.Array, *,
                  flips: jax.Array | None = None,
                  method: Literal["bilinear", "nearest"] = "bilinear") -> jax.Array:
  """Rotates each image counter-clockwise by a continuous angle (radians).

  Args:
    images: (B, H, W, C) images (any dtype for "nearest"; float for "bilinear").
    angles: (B,) angles in radians, counter-clockwise as displayed. Differentiable.
    flips: optional (B,) bool: mirror the width axis before rotating.
    method: "bilinear" or "nearest".

  Returns:
    (B, H, W, C) rotated about ((H-1)/2, (W-1)/2) with edge-value extension.
    Angles whose cosine/sine are within 1e-6 of 0 or +-1 are snapped, so rotations
    by multiples of 90 degrees move pixels exactly.
  """
  _checks.check_rank(images, "images", 4, "B, H, W, C: NHWC")
  if method == "bilinear":
    _checks.check_floating(images, "images")
  elif method != "nearest":
    raise ValueError(f"method must be 'bilinear' or 'nearest'; got {method!r}.")
  angles = jnp.asarray(angles)
  _checks.check_rank(angles, "angles", 1, "B,")
  _checks.check_floating(angles, "angles")
  _checks.check_batch(angles, "angles", images.shape[0])
  flips = (jnp.zeros(angles.shape, bool) if flips is None
           else jnp.asarray(flips, bool))
  _checks.check_batch(flips, "flips", images.shape[0])

  def snap(x):
    r = jax.lax.stop_gradient(jnp.round(x))
    return jnp.where(jnp.abs(x - r) < 1e-6, x - jax.lax.stop_gradient(x - r), x)

  cos = snap(jnp.cos(angles).astype(jnp.float32))
  sin = snap(jnp.sin(angles).astype(jnp.float32))
  return _resample(images, cos, sin, flips, method)


def transform_label_maps(labels: jax.Array, group, elements: jax.Array) -> jax.Array:
  """Applies per-sample elements to integer label maps / masks (nearest sampling).

  Args:
    labels: (B, H, W) or (B, H, W, K) label maps or masks, any dtype.
    group: group or name.
    elements: (B,) integer elements.

  Returns:
    Same shape and dtype; exact permutations for multiples of 90 degrees.
  """
  group = _check_group(group)
  _checks.check_rank(labels, "labels", (3, 4), "B, H, W or B, H, W, K")
  _check_spatial(labels, group, "labels")
  elements = _check_elements(elements, group, labels.shape[0])
  return _spatial(labels, group, elements, "nearest")


def transform_boxes(boxes: jax.Array, group, elements: jax.Array,
                    image_size: tuple[int, int]) -> jax.Array:
  """Applies per-sample elements to boxes.

  Args:
    boxes: (B, M, 4) float boxes ``(x_min, y_min, x_max, y_max)`` in pixel-edge
      coordinates of an image of ``image_size``.
    group: group or name.
    elements: (B,) integer elements.
    image_size: (H, W) of the image the boxes live in.

  Returns:
    (B, M, 4): the axis-aligned boxes around the transformed corners, clipped to the
    image. Exact for multiples of 90 degrees.
  """
  group = _check_group(group)
  _checks.check_rank(boxes, "boxes", 3, "B, M, 4")
  _checks.check_floating(boxes, "boxes")
  if boxes.shape[-1] != 4:
    raise ValueError(f"boxes must have 4 coordinates (x_min, y_min, x_max, y_max) on "
                     f"the last axis; got shape {boxes.shape}.")
  if len(image_size) != 2:
    raise ValueError(f"image_size must be (H, W); got {image_size!r}.")
  h, w = int(image_size[0]), int(image_size[1])
  if _needs_square(group) and h != w:
    raise ValueError(f"image_size must be square for {group.name}; got {image_size}.")
  elements = _check_elements(elements, group, boxes.shape[0])
  cos, sin = group.cos_sin()
  return _boxes(boxes, jnp.asarray(cos, boxes.dtype)[elements],
                jnp.asarray(sin, boxes.dtype)[elements],
                jnp.asarray(group.flips)[elements], h, w)


def rotate_boxes(boxes: jax.Array, angles: jax.Array,
                 image_size: tuple[int, int]) -> jax.Array:
  """Rotates boxes (B, M, 4) counter-clockwise by per-sample ``angles`` (B,) radians
  about the centre of an image of ``image_size`` (H, W); see :func:`rotate_images`."""
  _checks.check_rank(boxes, "boxes", 3, "B, M, 4")
  angles = jnp.asarray(angles)
  _checks.check_batch(angles, "angles", boxes.shape[0])
  h, w = int(image_size[0]), int(image_size[1])
  return _boxes(boxes, jnp.cos(angles), jnp.sin(angles),
                jnp.zeros(angles.shape, bool), h, w)


@functools.partial(jax.jit, static_argnames=("h", "w"))
def _boxes(boxes, cos, sin, flip, h: int, w: int):
  """Flip (optional) then rotate the corners of (B, M, 4) boxes; (B,) parameters."""
  cos, sin, flip = cos[:, None, None], sin[:, None, None], flip[:, None, None]
  xs = boxes[..., jnp.array([0, 2, 2, 0])] - w / 2.0  # (B, M, 4 corners)
  ys = boxes[..., jnp.array([1, 1, 3, 3])] - h / 2.0
  xs = jnp.where(flip, -xs, xs)
  rx = xs * cos + ys * sin + w / 2.0
  ry = -xs * sin + ys * cos + h / 2.0
  out = jnp.stack([rx.min(-1), ry.min(-1), rx.max(-1), ry.max(-1)], axis=-1)
  return jnp.clip(out, 0.0, jnp.array([w, h, w, h], boxes.dtype))


def transform_feature_maps(features: jax.Array, group, elements: jax.Array,
                           representation: Representation = "regular") -> jax.Array:
  """Applies per-sample elements to feature maps.

  Args:
    features: (B, H, W, C, |G|) for ``"regular"``; (B, H, W, C) for ``"scalar"``.
    group: group or name.
    elements: (B,) integer elements.
    representation: "regular" (spatial transform + group-axis permutation
      ``out[..., h] = f[..., g^-1 h]``) or "scalar" (spatial transform only).
  """
  group = _check_group(group)
  if representation == "regular":
    _checks.check_rank(features, "features", 5, "B, H, W, C, |G|")
    if features.shape[-1] != group.order:
      raise ValueError(f"features must have a group axis of size |G|={group.order} "
                       f"last; got shape {features.shape}.")
  elif representation == "scalar":
    _checks.check_rank(features, "features", 4, "B, H, W, C")
  else:
    raise ValueError(f"representation must be 'regular' or 'scalar'; got "
                     f"{representation!r}.")
  _check_spatial(features, group, "features")
  elements = _check_elements(elements, group, features.shape[0])
  out = _spatial(features, group, elements, "bilinear")
  if representation == "regular":
    out = _permute_regular(out, group, elements)
  return out
