"""A canonicalized model: canonicalizer (optional) + unchanged predictor, as one Flax model.

``CanonicalizedModel`` is what a user trains and evaluates::

  model = cj.CanonicalizedModel(predictor=resnet, canonicalizer=cj.ImageCanonicalizer("C8"),
                                input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
  variables = model.init(rng, images)                # {'params': {'canonicalizer': ...,
                                                     #             'predictor': ...}, ...}
  out = model.apply(variables, images)               # evaluation
  out, updates = model.apply(variables, images, train=True,
                             mutable=["batch_stats"], rngs={"dropout": key})
  loss = cross_entropy(out.predictions, labels) + prior_weight * out.prior + out.auxiliary

The canonicalizer sees the raw input; the predictor sees the canonical input, resized
to ``input_size`` and normalised with ``mean``/``std``. Without a canonicalizer the
model is the predictor with its preprocessing (the vanilla and augmentation baselines).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from canon_jax import losses
from canon_jax.canonicalize import CanonicalizationResult
from canon_jax.opt_canonicalize import OptimizedCanonicalizationResult, optimization_loss
from canon_jax.pointcloud import PointCloudCanonicalization


@flax.struct.dataclass
class CanonicalizedOutput:
  """What :class:`CanonicalizedModel` returns.

  Attributes:
    predictions: the predictor's output on the canonical input, e.g. (B, K) logits.
    canonicalization: the canonicalizer's result (:class:`canon_jax.CanonicalizationResult`,
      :class:`canon_jax.PointCloudCanonicalization`, ...), ``None`` without one.
    prior: float32 scalar, the canonicalizer's prior term
      (:func:`canonicalization_prior`; 0 without canonicalizer). Not weighted.
    auxiliary: float32 scalar, the canonicalizer's own training losses with their own
      weights (the optimization-based canonicalizers' orthogonality / artefact /
      regression terms, :func:`canon_jax.optimization_loss`); 0 for the others.
  """
  predictions: jax.Array
  canonicalization: Any
  prior: jax.Array
  auxiliary: jax.Array


def canonicalization_prior(result: Any, target: jax.Array | None = None) -> jax.Array:
  """The prior term of any canonicalizer's result (a float32 scalar).

  * discrete and continuous image canonicalizers (:class:`CanonicalizationResult`):
    :func:`canon_jax.prior_loss` of ``result.logits`` towards element 0, towards
    ``target`` (B,) int elements (the applied element, when the input was
    transformed on purpose), or towards ``target`` distributions over G, (B, |G|) or
    (|G|,) floats (data-driven priors: :func:`canon_jax.model_confidence_prior`,
    :func:`canon_jax.dataset_prior`);
  * point clouds (:class:`PointCloudCanonicalization`):
    :func:`canon_jax.rotation_prior_loss` of ``Q^T R`` with ``Q`` = ``target``
    (B, 3, 3) (the applied rotation), or of ``R`` itself without target.
  """
  if isinstance(result, PointCloudCanonicalization):
    rotation = result.rotation
    if target is not None:
      rotation = jnp.einsum("bji,bjk->bik", target.astype(rotation.dtype), rotation)
    return losses.rotation_prior_loss(rotation)
  if isinstance(result, CanonicalizationResult):
    prior = target
    if target is not None and jnp.issubdtype(target.dtype, jnp.integer):
      prior = jax.nn.one_hot(target, result.logits.shape[-1], dtype=jnp.float32)
    return losses.prior_loss(result.logits, prior)
  raise TypeError(f"no prior for a canonicalization result of type "
                  f"{type(result).__name__}.")


class CanonicalizedModel(nn.Module):
  """Canonicalizer (optional) + predictor + the predictor's input preprocessing.

  Attributes:
    predictor: the prediction network, called as ``predictor(x, train=...)``.
    canonicalizer: an :class:`canon_jax.ImageCanonicalizer`,
      :class:`canon_jax.PointCloudCanonicalizer` or optimization-based canonicalizer
      (called as ``canonicalizer(x, train=...)``, returning a result with a
      ``canonical`` field), or ``None`` for the predictor alone.
    input_size: images only: side S the canonical images are resized to (bilinear,
      antialiased) before the predictor; ``None`` keeps the input's size.
    mean, std: images only: per-channel normalisation ``(x - mean) / std`` of the
      predictor's input (after the resize); ``None`` for none.
    freeze_predictor: the predictor always runs in inference mode (running batch
      statistics, no dropout): its batch statistics never change. (Its parameters
      are frozen by the optimizer, e.g. ``optax.set_to_zero``.)

  Variables: ``{'params': {'canonicalizer': ..., 'predictor': ...}}`` plus
  ``'batch_stats'`` for the parts that have batch norm. Training with batch norm
  needs ``mutable=['batch_stats']``; a predictor with dropout needs
  ``rngs={'dropout': key}``; Gumbel selection ``rngs={'gumbel': key}``.
  """
  predictor: nn.Module
  canonicalizer: nn.Module | None = None
  input_size: int | None = None
  mean: Sequence[float] | None = None
  std: Sequence[float] | None = None
  freeze_predictor: bool = False

  def predictor_inputs(self, x: jax.Array) -> jax.Array:
    """Images (B, H, W, C) -> (B, S, S, C) resized and normalised; other inputs pass."""
    if self.input_size is not None and x.shape[1:3] != (self.input_size,) * 2:
      x = jax.image.resize(x, (x.shape[0], self.input_size, self.input_size, x.shape[-1]),
                           method="linear", antialias=True)
    if self.mean is not None:
      mean = jnp.asarray(self.mean, x.dtype)
      std = jnp.asarray(self.std if self.std is not None else 1.0, x.dtype)
      x = (x - mean) / std
    return x

  def predict(self, x: jax.Array) -> jax.Array:
    """The predictor alone (inference mode) on ``x`` as it is, with its preprocessing:
    ``model.apply(variables, x, method=CanonicalizedModel.predict)``."""
    return self.predictor(self.predictor_inputs(x), train=False)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               prior_target: jax.Array | None = None) -> CanonicalizedOutput:
    """Runs the model.

    Args:
      x: the input, e.g. (B, H, W, C) float images in [0, 1] (NHWC) or (B, N, 3)
        point clouds.
      train: training mode (straight-through canonicalization, batch statistics,
        dropout).
      prior_target: optional target of the prior (see :func:`canonicalization_prior`):
        (B,) elements or (B, 3, 3) rotations applied to the input on purpose.

    Returns:
      :class:`CanonicalizedOutput`.
    """
    zero = jnp.zeros((), jnp.float32)
    result, prior, auxiliary = None, zero, zero
    if self.canonicalizer is not None:
      result = self.canonicalizer(x, train=train)
      prior = canonicalization_prior(result, prior_target)
      if isinstance(result, OptimizedCanonicalizationResult):
        auxiliary = optimization_loss(result)
      x = result.canonical
    predictions = self.predictor(self.predictor_inputs(x),
                                 train=train and not self.freeze_predictor)
    return CanonicalizedOutput(predictions=predictions, canonicalization=result,
                               prior=prior, auxiliary=auxiliary)
