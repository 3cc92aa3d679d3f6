"""Image canonicalization: predict the input's pose in C_n / D_n, undo it, invert outputs.

Pipeline (``ImageCanonicalizer``)::

  images (B, H, W, C) --crop, resize, disk mask--> group-conv net --> logits (B, |G|)
  element g* = argmax(logits)                      (eval)
  weights    = onehot(g*) + softmax(beta*logits) - stop_gradient(softmax(...))  (train)
  canonical  = g*^-1 . images                      (full resolution, exact for 90°)

Because the network is equivariant, ``g*(g . x) = g g*(x)`` and the canonical image
``g*(g . x)^-1 . (g . x) = g*(x)^-1 . x`` does not depend on g.
"""
from __future__ import annotations

from typing import Literal

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from canon_jax import _checks, transforms
from canon_jax.selection import gumbel_straight_through_weights
from canon_jax.groups import DiscreteGroup, from_name
from canon_jax.nn.gconv import FilterBasis, gaussian_blur
from canon_jax.nn.networks import (GroupConvNet, GroupWideResNet,
                                   coset_averaged_logits)


@flax.struct.dataclass
class CanonicalizationResult:
  """What :class:`ImageCanonicalizer` returns.

  Attributes:
    canonical: (B, H, W, C) the input moved to its canonical pose.
    logits: (B, |G|) group-element logits (before ``beta``).
    element: (B,) int32 predicted element g* (canonical = g*^-1 . input).
    weights: (B, |G|) one-hot of ``element``; in training, the straight-through
      weights (one-hot forward, softmax(beta * logits) gradient).
    angle: (B,) radians, counter-clockwise, for the continuous SO(2) readout
      (canonical = input rotated by -angle); ``None`` for discrete readout.
    group: the group (static).
    train: whether the straight-through weights were used (static).
  """
  canonical: jax.Array
  logits: jax.Array
  element: jax.Array
  weights: jax.Array
  angle: jax.Array | None = None
  group: DiscreteGroup = flax.struct.field(pytree_node=False, default=None)
  train: bool = flax.struct.field(pytree_node=False, default=False)


def straight_through_weights(logits: jax.Array, beta: float = 1.0) -> jax.Array:
  """onehot(argmax) + softmax(beta*logits) - stop_gradient(softmax(beta*logits)).

  Forward value: exactly the one-hot of the argmax. Gradient: that of the softmax.
  (B, |G|) -> (B, |G|).
  """
  soft = jax.nn.softmax(beta * logits, axis=-1)
  hard = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=soft.dtype)
  # (soft - stop_gradient(soft)) is exactly 0 forward, so the sum is exactly one-hot
  # (hard + soft - stop_gradient(soft) rounds 1 + s - s to 1 - 2^-24 for some s).
  return hard + (soft - jax.lax.stop_gradient(soft))


def continuous_angle(logits: jax.Array) -> jax.Array:
  """SO(2) angle from C_n logits: the phase of their first circular Fourier mode.

  ``angle = arg(sum_k logits_k e^{i 2 pi k / n})``: (B, n) -> (B,) radians in
  (-pi, pi], counter-clockwise. A cyclic shift of the logits by s (what an input
  rotation by ``2 pi s / n`` does to an equivariant network's logits) adds exactly
  ``2 pi s / n``, and the mode interpolates continuously between the elements, so
  the estimate is well conditioned from initialisation (unlike the phase of a
  near-uniform softmax, whose magnitude is ~1/beta of it). Adding a constant to
  every logit changes nothing.
  """
  n = logits.shape[-1]
  theta = 2 * jnp.pi * jnp.arange(n) / n
  return jnp.arctan2(logits @ jnp.sin(theta).astype(logits.dtype),
                     logits @ jnp.cos(theta).astype(logits.dtype))


def soft_disk_mask(size: int, inner: float = 0.7, outer: float = 1.0) -> np.ndarray:
  """(size, size) mask: 1 inside radius ``inner*R``, cosine taper to 0 at ``outer*R``.

  R = size / 2, centred at ((size-1)/2, (size-1)/2); invariant under 90° rotations
  and flips of the grid, and smooth, so interpolated rotations barely disturb it.
  """
  c = (size - 1) / 2.0
  y, x = np.mgrid[:size, :size]
  r = np.hypot(x - c, y - c) / (size / 2.0)
  t = np.clip((r - inner) / max(outer - inner, 1e-6), 0.0, 1.0)
  return (0.5 * (1 + np.cos(np.pi * t))).astype(np.float32)


def _centre_crop(images, ratio: float):
  """Symmetric centre crop keeping about ``ratio`` of each side (even margins)."""
  h, w = images.shape[1:3]
  mh = int(round(h * (1 - ratio) / 2))
  mw = int(round(w * (1 - ratio) / 2))
  return images[:, mh:h - mh, mw:w - mw]


def preprocess_images(images: jax.Array, group: DiscreteGroup | str,
                      crop_ratio: float = 0.8, resize: int | None = 96,
                      mask: str = "auto", blur: float = 0.0) -> jax.Array:
  """What a canonicalization network sees: (B, H, W, C) -> (B, S, S, C).

  Centre crop keeping ``crop_ratio`` of each side, bilinear antialiased resize to
  ``resize`` x ``resize`` (None: keep), isotropic Gaussian blur of ``blur`` pixels,
  then a disk mask: "soft" (cosine taper, :func:`soft_disk_mask`), "hard", "none",
  or "auto" (soft for groups with non-90-degree rotations, none otherwise). Every
  step commutes exactly with the grid's 90-degree rotations and flips.
  """
  group = from_name(group)
  x = _centre_crop(images, crop_ratio)
  if resize is not None and x.shape[1:3] != (resize, resize):
    x = jax.image.resize(x, (x.shape[0], resize, resize, x.shape[-1]),
                         method="linear", antialias=True)
  x = gaussian_blur(x, blur)
  if mask == "auto":
    mask = "none" if group.exact_on_grid else "soft"
  if mask != "none":
    if x.shape[1] != x.shape[2]:
      raise ValueError(f"a disk input_mask needs square network inputs; got "
                       f"{x.shape[1]}x{x.shape[2]}. Set resize.")
    m = soft_disk_mask(x.shape[1]) if mask == "soft" else (
        soft_disk_mask(x.shape[1], 1.0, 1.0) > 0.5).astype(np.float32)
    x = x * jnp.asarray(m)[None, :, :, None]
  return x


class ImageCanonicalizer(nn.Module):
  """Learned canonicalization of images for C_n / D_n.

  Call as ``module.apply(variables, images, train=...)`` with images (B, H, W, C)
  float, NHWC, square for groups with 90-degree rotations. With
  ``network='wrn'`` training also needs ``mutable=['batch_stats']``.

  Attributes:
    group: "C8", "D4", ... or a DiscreteGroup.
    network: "gcnn" (equiadapt's default: lift + 1x1 group convs) or "wrn"
      (group-equivariant wide ResNet for segmentation-scale inputs).
    features, kernel_size, num_layers: network width, lifting kernel, depth.
      For "wrn", ``num_layers`` counts convolutions: stages of 2 blocks x 2 convs.
    input_crop_ratio: centre crop before the network (0.8 in equiadapt; 1 = none).
    resize: side the cropped input is resized to (96 in equiadapt, 128 for
      segmentation); ``None`` keeps the size.
    beta: softmax temperature of the straight-through estimator.
    selection: how training picks the element: "softmax" (default: the argmax,
      softmax(beta * logits) gradient; :func:`straight_through_weights`) or
      "gumbel" (a sample from softmax(beta * logits) by the Gumbel-max trick, the
      gradient of its relaxation at temperature ``gumbel_tau``;
      :func:`canon_jax.gumbel_straight_through_weights`). "gumbel" needs a
      ``"gumbel"`` PRNG stream in training: ``apply(..., rngs={"gumbel": key})``.
      Evaluation always takes the argmax.
    gumbel_tau: temperature of the Gumbel relaxation (gradient only).
    filter_basis, max_frequency, num_rings, filter_sigma: the filter
      parametrisation of every group-conv layer, bundled into a
      :class:`canon_jax.nn.FilterBasis` ("auto": pixels for C4/D4, a steerable
      basis of ``num_rings`` Gaussian rings of width ``filter_sigma`` pixels times
      circular harmonics up to ``max_frequency`` for other n).
    downsample_sigma: "wrn" only: width (pixels) of the isotropic Gaussian blur
      before each 2x2 pooling between stages (:func:`canon_jax.nn.group_blur_pool`);
      it keeps 45-degree rotations nearly equivariant. 0 = plain 2x2 pooling (exact
      for C4/D4 either way).
    input_blur: isotropic Gaussian blur (pixels, at the network's input size) after
      the resize; 0 = none. It makes the bilinear resampling of a rotated input
      matter less (measured: 0.7 px at 16 px lifts the 45-degree shift rate of the
      digits canonicalizer from ~96% to ~98%).
    coset_average: symmetrise the network over the cosets of the subgroup the grid
      carries exactly (:func:`canon_jax.nn.coset_averaged_logits`: for C8/D8 the
      network also runs on the input rotated by 45 degrees, 2x the cost), so that
      non-90-degree equivariance no longer depends on the network's own
      discretisation error, which grows with depth. ``None`` (default): on for
      "wrn" (a random C8 wide ResNet shifts its argmax by one under a 45-degree
      turn for ~60% of smooth inputs without it, 95-100% with it) and for the
      continuous readout (whose angle needs the logits' shift to be accurate, not
      just their argmax: within 3 degrees of 45 for 81-91% of smooth inputs
      without it, 87-95% with it), off for the discrete "gcnn" (one k x k
      layer: ~98% without it). No effect for C4/D4.
    input_mask: "soft" (cosine-tapered disk), "hard", "none", or "auto" (soft for
      groups with non-90-degree rotations, none otherwise).
    readout: "discrete" (argmax element) or "continuous" (SO(2) angle: the phase of
      the logits' first circular Fourier mode, :func:`continuous_angle`; the input is
      rotated back bilinearly; cyclic groups only). Its prior is
      :func:`canon_jax.prior_loss` on the same logits: raising element 0's logit
      turns the mode towards angle 0. In training the angle is differentiable, so
      the task loss reaches the network through the rotation.
    check_finite: raise ValueError on NaN/Inf input images. ``None`` (default):
      eager calls check (notebooks, ``init``), traced ones do not, so a jitted
      training step carries no host callback; ``True``: also under jit (a host
      callback raises when the step runs); ``False``: never.
    lift_padding: "SAME" (default; the lift keeps the network input's size) or
      "VALID" (no padding, (S - k + 1)^2 maps, as equiadapt's custom network;
      "gcnn" only). The parameters are the same either way.
  """
  group: DiscreteGroup | str = "C8"
  network: Literal["gcnn", "wrn"] = "gcnn"
  features: int = 32
  kernel_size: int = 5
  num_layers: int = 3
  input_crop_ratio: float = 0.8
  resize: int | None = 96
  beta: float = 1.0
  selection: Literal["softmax", "gumbel"] = "softmax"
  gumbel_tau: float = 1.0
  filter_basis: str = "auto"
  max_frequency: int = 1
  num_rings: int = 1
  filter_sigma: float = 1.0
  downsample_sigma: float = 1.0
  input_blur: float = 0.0
  coset_average: bool | None = None
  input_mask: Literal["auto", "soft", "hard", "none"] = "auto"
  readout: Literal["discrete", "continuous"] = "discrete"
  check_finite: bool | None = None
  lift_padding: Literal["SAME", "VALID"] = "SAME"

  def _validate(self, group: DiscreteGroup) -> None:
    _checks.check_choice(self.network, "network", ("gcnn", "wrn"))
    _checks.check_choice(self.selection, "selection", ("softmax", "gumbel"))
    _checks.check_choice(self.readout, "readout", ("discrete", "continuous"))
    if self.readout == "continuous" and group.reflections:
      raise ValueError(f"readout='continuous' needs a cyclic group C_n; got "
                       f"{group.name}.")
    _checks.check_choice(self.input_mask, "input_mask", ("auto", "soft", "hard", "none"))
    if not 0 < self.input_crop_ratio <= 1:
      raise ValueError(f"input_crop_ratio must be in (0, 1]; got "
                       f"{self.input_crop_ratio}.")
    _checks.check_choice(self.lift_padding, "lift_padding", ("SAME", "VALID"))
    if self.lift_padding == "VALID" and self.network != "gcnn":
      raise ValueError("lift_padding='VALID' is only for network='gcnn' (the wide "
                       "ResNet's stages need even map sides).")
    if self.resize is not None and self.resize < self.kernel_size:
      raise ValueError(f"resize must be None or >= kernel_size={self.kernel_size}; "
                       f"got {self.resize}.")

  def preprocess(self, images: jax.Array) -> jax.Array:
    """What the network sees (:func:`preprocess_images` with these fields)."""
    return preprocess_images(images, from_name(self.group), self.input_crop_ratio,
                             self.resize, self.input_mask, self.input_blur)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> CanonicalizationResult:
    group = from_name(self.group)
    self._validate(group)
    _checks.check_nhwc(images)
    transforms._check_spatial(images, group, "images")
    _checks.check_finite(images, "images", self.check_finite)
    x = self.preprocess(images)
    filters = FilterBasis(self.filter_basis, self.max_frequency, self.num_rings,
                          self.filter_sigma)
    if self.network == "gcnn":
      net = GroupConvNet(group, self.features, self.kernel_size, self.num_layers,
                         filters=filters, padding=self.lift_padding, name="network")
    else:
      stages = max(1, self.num_layers // 4)
      net = GroupWideResNet(group, (self.features,) * stages, blocks_per_stage=2,
                            kernel_size=self.kernel_size, filters=filters,
                            downsample_sigma=self.downsample_sigma, name="network")
    coset_average = self.coset_average
    if coset_average is None:
      coset_average = self.network == "wrn" or self.readout == "continuous"
    if coset_average:
      logits = coset_averaged_logits(lambda z: net(z, train=train), x, group)
    else:
      logits = net(x, train=train)

    if self.readout == "continuous":
      angle = continuous_angle(logits)
      step = 2 * jnp.pi / group.n
      element = (jnp.round(angle / step).astype(jnp.int32)) % group.n
      weights = jax.nn.one_hot(element, group.order, dtype=logits.dtype)
      canonical = transforms.rotate_images(images, -angle)
      return CanonicalizationResult(canonical, logits, element, weights, angle,
                                    group=group, train=train)

    element = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if train:
      if self.selection == "gumbel":
        weights = gumbel_straight_through_weights(
            self.beta * logits, self.make_rng("gumbel"), self.gumbel_tau)
        element = jnp.argmax(weights, axis=-1).astype(jnp.int32)
      else:
        weights = straight_through_weights(logits, self.beta)
      # sum_g w_g g^-1 . x: reorder the weights so that copy h = g^-1 gets w_g.
      canonical = transforms.transform_images_weighted(
          images, group, weights[:, group.inverses])
    else:
      weights = jax.nn.one_hot(element, group.order, dtype=logits.dtype)
      canonical = transforms.transform_images(images, group, group.inverse(element))
    return CanonicalizationResult(canonical, logits, element, weights, None,
                                  group=group, train=train)


def invert(outputs: jax.Array, result: CanonicalizationResult, *,
           kind: Literal["image", "scalar", "regular", "labels", "boxes"] = "image",
           image_size: tuple[int, int] | None = None) -> jax.Array:
  """Maps equivariant outputs computed on ``result.canonical`` back to the input frame.

  Applies the predicted element g* (or, for the continuous readout, the rotation by
  ``+angle``): ``out = g* . outputs``.

  Args:
    outputs: per ``kind``: "image"/"scalar" (B, H, W, C) float maps (logit maps,
      dense predictions); "regular" (B, H, W, C, |G|) regular feature maps;
      "labels" (B, H, W) or (B, H, W, K) integer label maps / masks (nearest);
      "boxes" (B, M, 4) float ``(x_min, y_min, x_max, y_max)`` boxes.
    result: the canonicalizer's output for the same batch.
    kind: the kind of output.
    image_size: (H, W), required for "boxes".

  Returns:
    ``outputs`` in the original frame, same shape. In training mode "image",
    "scalar" and "regular" use the straight-through weights, so the task loss
    reaches the canonicalizer through the inversion too.
  """
  if not isinstance(result, CanonicalizationResult):
    raise TypeError(f"result must be a CanonicalizationResult; got "
                    f"{type(result).__name__}.")
  group = result.group
  if result.angle is not None:
    if kind in ("image", "scalar", "labels"):
      x = outputs if outputs.ndim == 4 else outputs[..., None]
      method = "nearest" if kind == "labels" else "bilinear"
      y = transforms.rotate_images(x, result.angle, method=method)
      return y if outputs.ndim == 4 else y[..., 0]
    if kind != "boxes":
      raise ValueError(f"kind={kind!r} is not supported for the continuous readout; "
                       f"use 'image', 'scalar', 'labels' or 'boxes'.")
  if kind in ("image", "scalar"):
    _checks.check_nhwc(outputs, "outputs")
    if result.train:
      return transforms.transform_images_weighted(outputs, group, result.weights)
    return transforms.transform_images(outputs, group, result.element)
  if kind == "regular":
    if result.train:
      copies = jnp.stack([
          transforms.transform_feature_maps(
              outputs, group, jnp.full((outputs.shape[0],), g, jnp.int32))
          for g in range(group.order)])
      return jnp.einsum("gb...,bg->b...", copies, result.weights.astype(outputs.dtype))
    return transforms.transform_feature_maps(outputs, group, result.element)
  if kind == "labels":
    return transforms.transform_label_maps(outputs, group, result.element)
  if kind == "boxes":
    if image_size is None:
      raise ValueError("image_size=(H, W) is required for kind='boxes'.")
    if result.angle is not None:
      return transforms.rotate_boxes(outputs, result.angle, image_size)
    return transforms.transform_boxes(outputs, group, result.element, image_size)
  raise ValueError(f"kind must be 'image', 'scalar', 'regular', 'labels' or 'boxes'; "
                   f"got {kind!r}.")

