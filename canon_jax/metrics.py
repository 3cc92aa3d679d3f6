"""Metrics of equivariance and accuracy under a group.

All functions are pure ``jnp`` and take an optional ``mask`` (B,) of 1/0 weights so
padded evaluation batches count every example exactly once.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from canon_jax import _checks, frame_averaging, transforms
from canon_jax.groups import from_name


def _mask(mask, batch: int):
  if mask is None:
    return jnp.ones((batch,), jnp.float32)
  mask = jnp.asarray(mask, jnp.float32)
  _checks.check_rank(mask, "mask", 1, "B,")
  _checks.check_batch(mask, "mask", batch)
  return mask


def _predictions(logits_or_preds: jax.Array) -> jax.Array:
  x = jnp.asarray(logits_or_preds)
  return jnp.argmax(x, axis=-1) if jnp.issubdtype(x.dtype, jnp.floating) else x


def per_element_accuracy(predictions: jax.Array, labels: jax.Array,
                         mask: jax.Array | None = None) -> jax.Array:
  """Accuracy on each transformed copy of a batch.

  Args:
    predictions: (|G|, B, K) float logits or (|G|, B) int class predictions, copy g
      computed on ``g . images``.
    labels: (B,) int labels (the group does not change the class).
    mask: optional (B,) weights.

  Returns:
    (|G|,) accuracy per element (correct-weight sum / mask sum).
  """
  preds = _predictions(predictions)
  _checks.check_rank(preds, "predictions", 2, "|G|, B (after argmax)")
  _checks.check_integer(labels, "labels")
  _checks.check_batch(labels, "labels", preds.shape[1])
  m = _mask(mask, preds.shape[1])
  correct = (preds == labels[None]).astype(jnp.float32) * m[None]
  return correct.sum(axis=1) / jnp.maximum(m.sum(), 1e-12)


def group_averaged_accuracy(predictions: jax.Array, labels: jax.Array,
                            mask: jax.Array | None = None) -> jax.Array:
  """Mean over the group of :func:`per_element_accuracy` (scalar)."""
  return per_element_accuracy(predictions, labels, mask).mean()


def invariance_rate(predictions: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Fraction of samples whose predicted class is the same on all |G| copies.

  ``predictions``: (|G|, B, K) logits or (|G|, B) int classes. 1 - this is the
  invariance error.
  """
  preds = _predictions(predictions)
  _checks.check_rank(preds, "predictions", 2, "|G|, B (after argmax)")
  m = _mask(mask, preds.shape[1])
  same = jnp.all(preds == preds[:1], axis=0).astype(jnp.float32)
  return (same * m).sum() / jnp.maximum(m.sum(), 1e-12)


def identity_rate(elements: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Fraction of (upright) inputs mapped to the identity element 0. (B,) ints."""
  _checks.check_integer(elements, "elements")
  _checks.check_rank(elements, "elements", 1, "B,")
  m = _mask(mask, elements.shape[0])
  return ((elements == 0).astype(jnp.float32) * m).sum() / jnp.maximum(m.sum(), 1e-12)


def orientation_histogram(elements: jax.Array, order: int,
                          mask: jax.Array | None = None) -> jax.Array:
  """Empirical distribution of predicted elements: (B,) ints -> (order,) summing to 1."""
  _checks.check_integer(elements, "elements")
  _checks.check_rank(elements, "elements", 1, "B,")
  m = _mask(mask, elements.shape[0])
  counts = jnp.zeros((order,), jnp.float32).at[elements].add(m)
  return counts / jnp.maximum(counts.sum(), 1e-12)


def orientation_alignment(elements: jax.Array, prior: jax.Array | None, order: int,
                          mask: jax.Array | None = None,
                          smoothing: float = 1e-6) -> dict[str, jax.Array]:
  """How well the predicted elements' distribution q matches a prior p.

  Args:
    elements: (B,) predicted elements on the (upright) data.
    prior: (order,) distribution p; ``None`` means the identity prior.
    order: |G|.
    mask: optional (B,) weights.
    smoothing: added to q before the KL so that empty bins stay finite.

  Returns:
    ``{"kl": KL(p || q), "total_variation": 0.5 * sum |p - q|, "histogram": q}``.
  """
  q = orientation_histogram(elements, order, mask)
  p = jax.nn.one_hot(0, order) if prior is None else jnp.asarray(prior, jnp.float32)
  if p.shape != (order,):
    raise ValueError(f"prior must have shape ({order},); got {p.shape}.")
  qs = (q + smoothing) / (1 + order * smoothing)
  kl = jnp.sum(jnp.where(p > 0, p * (jnp.log(jnp.where(p > 0, p, 1.0)) - jnp.log(qs)),
                         0.0))
  return {"kl": kl, "total_variation": 0.5 * jnp.abs(p - q).sum(), "histogram": q}


def evaluate_under_group(predict_fn: Callable[[jax.Array], jax.Array],
                         images: jax.Array, labels: jax.Array, group,
                         mask: jax.Array | None = None, *,
                         canonicalizer_fn: Callable[[jax.Array], jax.Array] | None = None,
                         predictor_fn: Callable[[jax.Array], jax.Array] | None = None,
                         beta: float = 1.0) -> dict[str, jax.Array]:
  """Runs a classifier on every transformed copy of a batch and scores it.

  Args:
    predict_fn: images (B, H, W, C) -> logits (B, K).
    images: (B, H, W, C) test images as they are.
    labels: (B,) int labels.
    group: group or name.
    mask: optional (B,) weights.
    canonicalizer_fn, predictor_fn: give both to also score frame averaging over
      the canonicalizer's top-k poses (:mod:`canon_jax.frame_averaging`):
      ``canonicalizer_fn`` maps images to the canonicalizer's (B, |G|) logits
      (e.g. ``lambda x: canon.apply(v, x).logits``), ``predictor_fn`` maps canonical
      images to the predictor's (B, K) logits. Costs |G| canonicalizer and |G|^2
      predictor calls.
    beta: the canonicalizer's softmax temperature for the frame-averaging weights.

  Returns:
    ``accuracy`` (on the images as they are), ``g_averaged_accuracy``,
    ``per_element_accuracy`` (|G|,), ``invariance_rate``; with frame averaging also
    ``top_k_accuracy`` and ``top_k_g_averaged_accuracy``, (|G|,) each: entry k - 1
    is the accuracy of the prediction averaged over the top-k poses, on the images
    as they are and averaged over the |G| transformed copies (the accuracy-vs-k
    curve; entry 0 is hard canonicalization).
  """
  group = from_name(group)
  if (canonicalizer_fn is None) != (predictor_fn is None):
    raise ValueError("canonicalizer_fn and predictor_fn must be given together (for "
                     "the frame-averaging curve) or not at all.")
  copies = transforms.all_transforms(images, group)            # (|G|, B, H, W, C)
  logits = jax.lax.map(predict_fn, copies)                       # (|G|, B, K)
  per = per_element_accuracy(logits, labels, mask)
  out = {"accuracy": per[0], "g_averaged_accuracy": per.mean(),
         "per_element_accuracy": per, "invariance_rate": invariance_rate(logits, mask)}
  if canonicalizer_fn is not None:
    def curve_accuracy(x):
      curve = frame_averaging.frame_averaging_curve(
          predictor_fn, x, canonicalizer_fn(x), group, beta)   # (|G| k's, B, K)
      return per_element_accuracy(curve, labels, mask)         # (|G| k's,)
    acc = jax.lax.map(curve_accuracy, copies)                  # (|G| copies, |G| k's)
    out["top_k_accuracy"] = acc[0]
    out["top_k_g_averaged_accuracy"] = acc.mean(axis=0)
  return out
