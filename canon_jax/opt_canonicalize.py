"""Optimization-based canonicalizers: canonicalization with any (non-equivariant) network.

Panigrahi & Mondal, "Improved canonicalization for model agnostic equivariance"
(2024): instead of an equivariant network, run an ordinary network f on every
transformed copy of the input and pick the copy whose features align best with a
reference vector. Equivariance then comes from the construction (the set of copies of
``a . x`` is the set of copies of ``x``, permuted), not from the architecture, so f can
be a small CNN, a ResNet18 or any pretrained backbone.

Discrete C_n / D_n (:class:`OptimizedGroupCanonicalizer`)::

  copies     c_h = h . x'                 for every h in G  (x' = crop/resize/mask(x))
  features   v_h = f(c_h)                 (B, |G|, D)
  logits     logit_g = logit_scale * cos(v_{g^-1}, r) = logit_scale * cos(f(g^-1 . x'), r)
  element    g* = argmax_g logit_g        (eval; straight-through weights in training)
  canonical  g*^-1 . x                    (full resolution, exact for 90-degree steps)

Convention: logit_g scores the candidate canonical input g^-1 . x, so the logits are
indexed like those of :class:`canon_jax.ImageCanonicalizer` (canonical = g*^-1 . x).
For x -> a . x the copies permute, ``logit_g(a . x) = logit_{a^-1 g}(x)``, hence
``g*(a . x) = a g*(x)`` (equivariant) and ``canonical(a . x) = canonical(x)``
(invariant), whatever f is; ties aside. For C4/D4 this is exact.

Continuous SO(2) (:class:`OptimizedRotationCanonicalizer`): f predicts a 2-vector v,
angle = atan2(v_y, v_x), canonical = input rotated by -angle. f is trained to
predict known random rotations of the (upright) training data
(:func:`rotation_regression_loss`), so its equivariance is learned, not built in.

Losses (pure functions; :func:`optimization_loss` adds up the ones a result carries):
:func:`orthogonality_loss` (the |G| copies must give distinct, well-separated
features), :func:`artefact_loss` (f must not tell copies apart by interpolation
artefacts) and :func:`rotation_regression_loss` (SO(2)).
"""
from __future__ import annotations

import inspect
from typing import Literal

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from canon_jax import _checks, transforms
from canon_jax.canonicalize import (CanonicalizationResult, preprocess_images,
                                    straight_through_weights)
from canon_jax.groups import DiscreteGroup, from_name
from canon_jax.selection import gumbel_straight_through_weights


@flax.struct.dataclass
class OptimizedCanonicalizationResult(CanonicalizationResult):
  """A :class:`~canon_jax.CanonicalizationResult` plus what the optimization losses need.

  The fields of the base class keep their meaning (``canonical = g*^-1 . input``, or
  the input rotated by ``-angle``), so :func:`canon_jax.invert`, the metrics and
  :func:`canon_jax.prior_loss` work unchanged. Extra fields (``None`` when not
  computed):

  Attributes:
    features: (B, |G|, D) discrete: row g is f(g^-1 . x'), the features behind
      ``logits[:, g]`` (x' the preprocessed input).
    round_trip_features: (B, |G|, D) discrete, training with ``artefact=True``:
      f of each copy after a random rotation by a non-zero multiple of 2 pi / n and
      back (same row order as ``features``).
    vectors: (B, 2) SO(2): f's 2-vector on the input (angle = atan2(v[:, 1], v[:, 0])).
    augmented_vectors: (B, 2) SO(2), training with ``regression=True``: f's 2-vector on
      the preprocessed input rotated counter-clockwise by ``augmented_angles``.
    augmented_angles: (B,) radians, the known random rotations.
  """
  features: jax.Array | None = None
  round_trip_features: jax.Array | None = None
  vectors: jax.Array | None = None
  augmented_vectors: jax.Array | None = None
  augmented_angles: jax.Array | None = None


# ----------------------------------------------------------------------------------
# Losses (pure)
# ----------------------------------------------------------------------------------


def _unit(v: jax.Array, eps: float = 1e-12) -> jax.Array:
  norm = jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True))
  return v / jnp.maximum(norm, eps)


def orthogonality_loss(features: jax.Array) -> jax.Array:
  """Mean squared off-diagonal cosine similarity between the |G| copies' features.

  With u_{b,g} = features[b, g] / |features[b, g]| and the Gram matrix
  S_b = U_b U_b^T (|G| x |G|, S_b[g, h] = cos(features[b, g], features[b, h])):

      loss = 1 / (B |G| (|G| - 1)) * sum_b sum_{g != h} S_b[g, h]^2.

  Zero when the copies' features are pairwise orthogonal, 1 when they are all
  parallel (e.g. a constant f, whose argmax would be an arbitrary tie). It keeps the
  canonicalizer from collapsing and makes the argmax well separated. (equiadapt
  averages |S_b[g, h]| of the *unnormalised* features over all |G|^2 entries; this
  one is scale-free.)

  Args:
    features: (B, |G|, D) float, e.g. ``result.features``.

  Returns:
    A scalar; 0 for |G| = 1.
  """
  _checks.check_rank(features, "features", 3, "B, |G|, D")
  _checks.check_floating(features, "features")
  order = features.shape[1]
  if order < 2:
    return jnp.zeros((), features.dtype)
  u = _unit(features)
  gram = jnp.einsum("bgd,bhd->bgh", u, u)
  off = 1.0 - jnp.eye(order, dtype=features.dtype)
  return jnp.sum((gram * off) ** 2) / (features.shape[0] * order * (order - 1))


def artefact_loss(features: jax.Array, round_trip_features: jax.Array) -> jax.Array:
  """Mean squared difference between f on each copy and on its rotated-and-back copy.

  For groups with non-90-degree rotations the copies g . x are made by bilinear
  resampling, which blurs and edge-pads; a free network f can learn to recognise
  those artefacts and separate the copies by them (an easy way to satisfy
  :func:`orthogonality_loss`) instead of by the content's orientation, and the
  canonicalizer then stops being equivariant on real rotations. Panigrahi & Mondal
  (2024) penalise this: f(R_-t R_t c) should equal f(c) for every copy c and a random
  rotation t by a multiple of 2 pi / n, i.e.

      loss = mean over b, g and the D features of
             (round_trip_features[b, g] - features[b, g])^2.

  Identically 0 for C4/D4 (rotations by 90 degrees are exact).

  Args:
    features: (B, |G|, D) f on the copies (``result.features``).
    round_trip_features: (B, |G|, D) f on the round-tripped copies
      (``result.round_trip_features``).
  """
  _checks.check_rank(features, "features", 3, "B, |G|, D")
  if round_trip_features.shape != features.shape:
    raise ValueError(f"round_trip_features must have the shape of features "
                     f"{features.shape}; got {round_trip_features.shape}.")
  return jnp.mean((round_trip_features - features) ** 2)


def rotation_regression_loss(vectors: jax.Array, angles: jax.Array) -> jax.Array:
  """MSE between the rotation a 2-vector encodes and a known rotation.

  With phi_b = atan2(vectors[b, 1], vectors[b, 0]) and theta_b = angles[b]:

      loss = mean over b and the 4 entries of (R(phi_b) - R(theta_b))^2
           = mean_b (1 - cos(phi_b - theta_b)),

  R the 2 x 2 counter-clockwise rotation matrix (equiadapt's MSE between rotation
  matrices). Only the direction of each vector counts. Used with inputs rotated by
  known random angles: if the training data is upright, the network learns to
  predict each input's rotation.

  Args:
    vectors: (B, 2) float predicted vectors (x, y) = (cos, sin) direction.
    angles: (B,) float known rotations, radians, counter-clockwise.
  """
  _checks.check_rank(vectors, "vectors", 2, "B, 2")
  _checks.check_floating(vectors, "vectors")
  if vectors.shape[-1] != 2:
    raise ValueError(f"vectors must have shape (B, 2); got {vectors.shape}.")
  _checks.check_rank(angles, "angles", 1, "B,")
  _checks.check_batch(angles, "angles", vectors.shape[0])
  u = _unit(vectors)
  return jnp.mean(1.0 - (u[:, 0] * jnp.cos(angles) + u[:, 1] * jnp.sin(angles)))


def optimization_loss(result: OptimizedCanonicalizationResult, *,
                      orthogonality_weight: float = 1.0,
                      artefact_weight: float = 1.0,
                      regression_weight: float = 1.0) -> jax.Array:
  """Weighted sum of the optimization losses the result carries (a scalar).

  ``orthogonality_weight * orthogonality_loss(features)`` if ``features`` is set,
  ``+ artefact_weight * artefact_loss(...)`` if ``round_trip_features`` is set,
  ``+ regression_weight * rotation_regression_loss(augmented_vectors,
  augmented_angles)`` if those are set; 0 for an evaluation-mode SO(2) result. Add
  the task loss and, if wanted, ``prior_weight * prior_loss(result.logits)``.
  """
  if not isinstance(result, OptimizedCanonicalizationResult):
    raise TypeError(f"result must be an OptimizedCanonicalizationResult; got "
                    f"{type(result).__name__}.")
  loss = jnp.zeros((), jnp.float32)
  if result.features is not None:
    loss = loss + orthogonality_weight * orthogonality_loss(result.features)
  if result.round_trip_features is not None:
    loss = loss + artefact_weight * artefact_loss(result.features,
                                                  result.round_trip_features)
  if result.augmented_vectors is not None:
    loss = loss + regression_weight * rotation_regression_loss(
        result.augmented_vectors, result.augmented_angles)
  return loss


# ----------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------


def _call_network(network: nn.Module, x: jax.Array, train: bool) -> jax.Array:
  """f(x), passing ``train`` when f's ``__call__`` takes it (BatchNorm, dropout)."""
  if "train" in inspect.signature(network.__call__).parameters:
    return network(x, train=train)
  return network(x)


def _check_common(images, group, crop_ratio, check_finite):
  _checks.check_nhwc(images)
  transforms._check_spatial(images, group, "images")
  _checks.check_finite(images, "images", check_finite)
  if not 0 < crop_ratio <= 1:
    raise ValueError(f"input_crop_ratio must be in (0, 1]; got {crop_ratio}.")


class OptimizedGroupCanonicalizer(nn.Module):
  """Discrete C_n / D_n canonicalization with any network f (optimization-based).

  Call as ``module.apply(variables, images, train=...)`` with images (B, H, W, C)
  float NHWC (square for groups with 90-degree rotations). Returns an
  :class:`OptimizedCanonicalizationResult`; see the module docstring for the
  construction and the index convention (``logits[:, g]`` scores g^-1 . x).

  Selection (as :class:`canon_jax.ImageCanonicalizer`): evaluation takes the hard
  argmax of the logits. Training uses straight-through weights, so the task loss
  reaches f and the reference vector: ``selection="softmax"`` (forward one-hot of
  the argmax, gradient of softmax(beta * logits)) or ``selection="gumbel"`` (forward
  one-hot of a sample from softmax(beta * logits), gradient of the perturbed softmax;
  needs an rng stream ``"gumbel"``: ``apply(..., train=True, rngs={"gumbel": key})``;
  ``element`` is then the sampled element).

  The |G| copies pass through f as one batch of B * |G| images. If f has BatchNorm
  (e.g. :class:`canon_jax.models.ResNet18`), training needs
  ``mutable=['batch_stats']``; its statistics are those of all the copies, which is
  invariant to transforming the input.

  Attributes:
    network: f, a Flax module mapping (N, S, S, C) images to (N, D) feature vectors
      (e.g. ``models.ResNet18(num_classes=D)``); called with ``train=`` when its
      ``__call__`` takes that argument.
    group: "C4", "D4", "C8", ... or a DiscreteGroup.
    reference: "learned" (parameter ``reference`` of shape (D,), normal init) or
      "fixed" (a constant unit-normal vector drawn from ``reference_seed``, no
      parameter).
    reference_seed: seed of the fixed reference vector.
    logit_scale: logits = logit_scale * cosine (cosines lie in [-1, 1]; a larger scale
      lets :func:`canon_jax.prior_loss` make the prior's element dominant).
    beta: softmax temperature of the straight-through / Gumbel selection.
    selection: "softmax" or "gumbel" (training only).
    input_crop_ratio, resize, input_mask: preprocessing of the input before the
      copies are made, as in :class:`canon_jax.ImageCanonicalizer` (centre crop,
      resize to ``resize`` x ``resize``, disk mask; "auto": soft mask for non-90-degree
      groups). Exact invariance for C4/D4 needs ``resize=None`` or a resize that
      commutes exactly with rot90 on the given sizes.
    artefact: in training, also run f on each copy rotated by a random non-zero
      multiple of 2 pi / n and back (``round_trip_features``, for
      :func:`artefact_loss`; rng stream ``"artefact"``). Doubles f's cost.
    check_finite: as :class:`canon_jax.ImageCanonicalizer`.
  """
  network: nn.Module
  group: DiscreteGroup | str = "C4"
  reference: Literal["learned", "fixed"] = "learned"
  reference_seed: int = 0
  logit_scale: float = 1.0
  beta: float = 1.0
  selection: Literal["softmax", "gumbel"] = "softmax"
  input_crop_ratio: float = 0.8
  resize: int | None = 96
  input_mask: Literal["auto", "soft", "hard", "none"] = "auto"
  artefact: bool = False
  check_finite: bool | None = None

  def _validate(self, group: DiscreteGroup) -> None:
    _checks.check_choice(self.reference, "reference", ("learned", "fixed"))
    _checks.check_choice(self.selection, "selection", ("softmax", "gumbel"))
    if self.artefact and group.n < 2:
      raise ValueError(f"artefact=True needs rotations (n >= 2); got {group.name}.")

  @nn.compact
  def __call__(self, images: jax.Array,
               train: bool = False) -> OptimizedCanonicalizationResult:
    group = from_name(self.group)
    self._validate(group)
    _check_common(images, group, self.input_crop_ratio, self.check_finite)
    b = images.shape[0]
    x = preprocess_images(images, group, self.input_crop_ratio, self.resize,
                          self.input_mask)
    copies = transforms.all_transforms(x, group)                  # (|G|, B, S, S, C)
    copies = copies.reshape((group.order * b,) + x.shape[1:])
    net_in = copies
    if train and self.artefact:
      net_in = jnp.concatenate([copies, self._round_trip(copies, group)])
    out = _call_network(self.network, net_in, train)
    if out.ndim != 2 or out.shape[0] != net_in.shape[0]:
      raise ValueError(f"network must map (N, S, S, C) images to (N, D) vectors; got "
                       f"output shape {out.shape} for input shape {net_in.shape}.")
    out = out.astype(jnp.float32)  # cosines and their argmax in float32 (bf16 nets tie)
    d = out.shape[-1]
    # Row h of v is f(h . x'); row g of features is f(g^-1 . x').
    v = out.reshape((-1, group.order, b, d)).transpose(0, 2, 1, 3)[:, :, group.inverses]
    features, round_trip = v[0], (v[1] if v.shape[0] > 1 else None)
    if self.reference == "learned":
      ref = self.param("reference", nn.initializers.normal(1.0), (d,), jnp.float32)
    else:
      ref = jax.random.normal(jax.random.key(self.reference_seed), (d,), jnp.float32)
    logits = self.logit_scale * jnp.einsum("bgd,d->bg", _unit(features), _unit(ref))

    if train:
      if self.selection == "gumbel":
        weights = gumbel_straight_through_weights(self.beta * logits,
                                                  self.make_rng("gumbel"))
      else:
        weights = straight_through_weights(logits, self.beta)
      element = jnp.argmax(weights, axis=-1).astype(jnp.int32)
      canonical = transforms.transform_images_weighted(
          images, group, weights[:, group.inverses])
    else:
      element = jnp.argmax(logits, axis=-1).astype(jnp.int32)
      weights = jax.nn.one_hot(element, group.order, dtype=logits.dtype)
      canonical = transforms.transform_images(images, group, group.inverse(element))
    return OptimizedCanonicalizationResult(
        canonical, logits, element, weights, None, group=group, train=train,
        features=features, round_trip_features=round_trip)

  def _round_trip(self, copies: jax.Array, group: DiscreteGroup) -> jax.Array:
    """Each copy rotated by 2 pi k / n, k uniform in [1, n), and back (bilinear)."""
    k = jax.random.randint(self.make_rng("artefact"), (copies.shape[0],), 1, group.n)
    theta = (2 * jnp.pi / group.n) * k.astype(jnp.float32)
    there = transforms.rotate_images(copies, theta)
    return transforms.rotate_images(there, -theta)


class OptimizedRotationCanonicalizer(nn.Module):
  """Continuous SO(2) canonicalization with any network f predicting a 2-vector.

  ``angle = atan2(v_y, v_x)`` with ``v = f(x')`` (radians, counter-clockwise; x' the
  preprocessed input); ``canonical`` = the input rotated by ``-angle``
  (:func:`canon_jax.rotate_images`, bilinear, differentiable in the angle). The
  result matches the continuous readout of :class:`canon_jax.ImageCanonicalizer`:
  ``angle`` set, ``element`` = the nearest of the n rotations of ``group``
  (round(angle / (2 pi / n)) mod n), ``weights`` its one-hot; ``logits[:, k] =
  <v, (cos 2 pi k / n, sin 2 pi k / n)>`` (argmax = ``element``), so
  :func:`canon_jax.prior_loss` pulls the angle towards 0.

  With ``regression=True``, training also runs f on the preprocessed input rotated
  counter-clockwise by uniform random angles in [0, 2 pi) (rng stream
  ``"rotation"``: ``apply(..., train=True, rngs={"rotation": key})``) and returns
  ``augmented_vectors`` and ``augmented_angles`` for
  :func:`rotation_regression_loss` (through :func:`optimization_loss`). f is not
  equivariant: this loss is what teaches it to read the rotation of upright data.

  Attributes:
    network: f, a Flax module mapping (N, S, S, C) images to (N, 2) vectors
      (e.g. ``models.ResNet18(num_classes=2)``); called with ``train=`` when its
      ``__call__`` takes that argument.
    group: the cyclic group C_n whose rotations index ``logits``/``element``.
    regression: add the randomly rotated copies in training (doubles f's cost).
    input_crop_ratio, resize, input_mask: preprocessing as
      :class:`canon_jax.ImageCanonicalizer` ("auto": soft disk mask here, as the
      input is rotated by arbitrary angles).
    check_finite: as :class:`canon_jax.ImageCanonicalizer`.
  """
  network: nn.Module
  group: DiscreteGroup | str = "C8"
  regression: bool = True
  input_crop_ratio: float = 0.8
  resize: int | None = 96
  input_mask: Literal["auto", "soft", "hard", "none"] = "auto"
  check_finite: bool | None = None

  @nn.compact
  def __call__(self, images: jax.Array,
               train: bool = False) -> OptimizedCanonicalizationResult:
    group = from_name(self.group)
    if group.reflections:
      raise ValueError(f"group must be a cyclic group C_n (SO(2) has no "
                       f"reflections); got {group.name}.")
    _check_common(images, group, self.input_crop_ratio, self.check_finite)
    b = images.shape[0]
    mask = "soft" if self.input_mask == "auto" else self.input_mask
    x = preprocess_images(images, group, self.input_crop_ratio, self.resize, mask)
    net_in = x
    angles = None
    if train and self.regression:
      angles = jax.random.uniform(self.make_rng("rotation"), (b,), jnp.float32,
                                  0.0, 2 * jnp.pi)
      net_in = jnp.concatenate([x, transforms.rotate_images(x, angles)])
    out = _call_network(self.network, net_in, train)
    if out.shape != (net_in.shape[0], 2):
      raise ValueError(f"network must map (N, S, S, C) images to (N, 2) vectors; got "
                       f"output shape {out.shape} for input shape {net_in.shape}.")
    out = out.astype(jnp.float32)
    vectors = out[:b]
    augmented = out[b:] if angles is not None else None

    angle = jnp.arctan2(vectors[:, 1], vectors[:, 0])
    cos, sin = group.cos_sin()
    logits = vectors @ jnp.asarray([cos, sin], jnp.float32)
    step = 2 * jnp.pi / group.n
    element = jnp.round(angle / step).astype(jnp.int32) % group.n
    weights = jax.nn.one_hot(element, group.order, dtype=logits.dtype)
    canonical = transforms.rotate_images(images, -angle)
    return OptimizedCanonicalizationResult(
        canonical, logits, element, weights, angle, group=group, train=train,
        vectors=vectors, augmented_vectors=augmented, augmented_angles=angles)
