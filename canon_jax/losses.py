"""Prior losses that regularise the canonicalization network, and data-driven priors.

The paper's prior (Mondal et al. 2023, Sec. 3) pulls the distribution of predicted
group elements towards the orientations seen in the pretrained model's training data.
Besides the identity prior, a prior can be estimated from data:

* :func:`model_confidence_prior`: per sample, softmax over G of how confident the
  pretrained predictor is on each candidate canonical input g^-1 . x (scores from
  :func:`model_confidence_scores`);
* :func:`dataset_prior`: one distribution over G for the whole data set, from an
  orientation histogram (e.g. labelled poses, or the elements a canonicalizer
  predicts on upright reference data).

Both feed :func:`prior_loss` (a (B, |G|) or a (|G|,) prior). Element indices follow
:mod:`canon_jax.groups`; a prior's mass on g says "the input is g . (canonical pose)",
i.e. the canonical input is g^-1 . x.
"""
from __future__ import annotations

from typing import Callable, Literal

import jax
import jax.numpy as jnp

from canon_jax import _checks, transforms
from canon_jax.groups import from_name


def prior_loss(logits: jax.Array, prior: jax.Array | None = None) -> jax.Array:
  """KL(prior || softmax(logits)), averaged over the batch.

  Args:
    logits: (B, |G|) group-element logits of the canonicalization network (raw,
      before the straight-through temperature ``beta``).
    prior: ``None`` for the identity prior (all mass on element 0, i.e.
      cross-entropy to the identity: ``-log softmax(logits)[:, 0]``), a (|G|,)
      distribution shared by the batch, or a (B, |G|) distribution per sample.
      Must be non-negative and sum to one along the last axis.

  Returns:
    A scalar: mean over the batch of sum_g p(g) (log p(g) - log q(g)), with
    q = softmax(logits) and 0 log 0 = 0.

  >>> import jax.numpy as jnp
  >>> float(prior_loss(jnp.zeros((2, 4))))  # uniform q, identity prior: log 4
  1.386294...
  """
  _checks.check_rank(logits, "logits", 2, "B, |G|")
  _checks.check_floating(logits, "logits")
  log_q = jax.nn.log_softmax(logits, axis=-1)
  if prior is None:
    return -jnp.mean(log_q[:, 0])
  prior = jnp.asarray(prior, dtype=log_q.dtype)
  _checks.check_rank(prior, "prior", (1, 2), "|G| or B, |G|")
  if prior.shape[-1] != logits.shape[-1]:
    raise ValueError(
        f"prior must have |G|={logits.shape[-1]} entries on its last axis; got "
        f"shape {prior.shape}.")
  if prior.ndim == 2:
    _checks.check_batch(prior, "prior", logits.shape[0])
  if _checks.is_concrete(prior):
    with jax.ensure_compile_time_eval():   # a constant captured by a jitted function
      bad = bool(jnp.any(prior < 0)) or not bool(
          jnp.allclose(prior.sum(-1), 1.0, atol=1e-4))
    if bad:
      raise ValueError(
          "prior must be a probability distribution (non-negative, summing to 1 "
          f"on the last axis); got sums {prior.sum(-1)} and min {prior.min()}.")
  prior = jnp.broadcast_to(prior, log_q.shape)
  log_p = jnp.where(prior > 0, jnp.log(jnp.where(prior > 0, prior, 1.0)), 0.0)
  return jnp.mean(jnp.sum(prior * (log_p - log_q), axis=-1))


def rotation_prior_loss(rotations: jax.Array) -> jax.Array:
  """Mean squared distance of predicted frames to the identity.

  Args:
    rotations: (B, d, d) rotation matrices (d = 2 or 3).

  Returns:
    A scalar: mean over batch and all d*d entries of (R - I)^2 (as equiadapt's
    ``mse_loss(R, I)``).
  """
  _checks.check_rank(rotations, "rotations", 3, "B, d, d")
  _checks.check_floating(rotations, "rotations")
  d = rotations.shape[-1]
  if rotations.shape[-2] != d:
    raise ValueError(
        f"rotations must be square matrices (B, d, d); got shape {rotations.shape}.")
  return jnp.mean((rotations - jnp.eye(d, dtype=rotations.dtype)) ** 2)


def model_confidence_scores(predict_fn: Callable[[jax.Array], jax.Array],
                            images: jax.Array, group, *,
                            metric: Literal["max_prob", "neg_entropy"] = "max_prob"
                            ) -> jax.Array:
  """How confident a predictor is on every candidate canonical input g^-1 . x.

  Args:
    predict_fn: images (B, H, W, C) -> class logits (B, K) (the pretrained
      predictor; run once per group element, under ``jax.lax.map``).
    images: (B, H, W, C) float NHWC images.
    group: group or name.
    metric: "max_prob" (max_k softmax(logits)_k, in [1/K, 1]) or "neg_entropy"
      (sum_k p_k log p_k, in [-log K, 0]).

  Returns:
    (B, |G|) float32 scores, ``scores[b, g] = metric(predict_fn(g^-1 . images)[b])``,
    so that a predictor confident on upright images scores highest the element that
    brought the input out of its upright pose. Exact permutations for C4/D4.
  """
  group = from_name(group)
  _checks.check_choice(metric, "metric", ("max_prob", "neg_entropy"))
  copies = transforms.all_transforms(images, group)          # copy h = h . images
  logits = jax.lax.map(predict_fn, copies)                    # (|G|, B, K)
  _checks.check_rank(logits, "predict_fn output", 3, "|G|, B, K after lax.map")
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  if metric == "max_prob":
    scores = jnp.exp(jnp.max(log_p, axis=-1))
  else:
    scores = jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
  # column g reads the copy h = g^-1
  return scores.T[:, group.inverses]


def model_confidence_prior(scores: jax.Array, tau: float = 1.0) -> jax.Array:
  """The model-confidence prior: softmax(scores / tau) over the group axis.

  Args:
    scores: (B, |G|) (or (|G|,)) scores of the candidate canonical inputs, e.g. from
      :func:`model_confidence_scores`; higher = more plausible canonical pose.
    tau: temperature > 0 (small: close to one-hot at the most confident pose;
      large: close to uniform). Scores in [0, 1] (``max_prob``) need a small tau
      (e.g. 0.05-0.1) to give a peaked prior.

  Returns:
    Same shape as ``scores``, non-negative, summing to 1 over the last axis: a
    per-sample ``prior`` for :func:`prior_loss`. Treat it as a constant target
    (it is wrapped in ``stop_gradient``).
  """
  _checks.check_rank(scores, "scores", (1, 2), "|G| or B, |G|")
  _checks.check_floating(scores, "scores")
  if not tau > 0:
    raise ValueError(f"tau must be > 0; got {tau}.")
  return jax.lax.stop_gradient(jax.nn.softmax(scores / tau, axis=-1))


def dataset_prior(observations: jax.Array, num_elements: int, *,
                  smoothing: float = 0.0, mask: jax.Array | None = None) -> jax.Array:
  """A distribution over G estimated from data: a smoothed orientation histogram.

  Args:
    observations: either (N,) integer elements in [0, num_elements) (one pose per
      example: labelled orientations of the training data, or the elements a
      canonicalizer predicts on reference data), or a (num_elements,) float
      histogram / count vector (e.g. :func:`canon_jax.orientation_histogram`).
    num_elements: |G|.
    smoothing: additive (Laplace) pseudo-count per element, >= 0; > 0 keeps every
      element possible (a finite :func:`prior_loss` for any logits).
    mask: optional (N,) weights of integer observations (padding = 0).

  Returns:
    (num_elements,) float32 ``(counts + smoothing) / (sum(counts) + |G| smoothing)``.

  >>> import jax.numpy as jnp
  >>> dataset_prior(jnp.array([0, 0, 1, 3]), 4, smoothing=1.0).tolist()
  [0.375, 0.25, 0.125, 0.25]
  """
  if not smoothing >= 0:
    raise ValueError(f"smoothing must be >= 0; got {smoothing}.")
  observations = jnp.asarray(observations)
  if jnp.issubdtype(observations.dtype, jnp.integer):
    _checks.check_rank(observations, "observations", 1, "N,")
    if _checks.is_concrete(observations) and observations.size:
      lo, hi = int(observations.min()), int(observations.max())
      if lo < 0 or hi >= num_elements:
        raise ValueError(f"observations must lie in [0, {num_elements}); got values "
                         f"in [{lo}, {hi}].")
    w = (jnp.ones(observations.shape, jnp.float32) if mask is None
         else jnp.asarray(mask, jnp.float32))
    _checks.check_batch(w, "mask", observations.shape[0])
    counts = jnp.zeros((num_elements,), jnp.float32).at[observations].add(w)
  else:
    if observations.shape != (num_elements,):
      raise ValueError(f"a float histogram must have shape ({num_elements},); got "
                       f"{observations.shape}. Pass integer elements for raw "
                       f"observations.")
    if mask is not None:
      raise ValueError("mask applies to integer observations only.")
    counts = observations.astype(jnp.float32)
    if _checks.is_concrete(counts) and bool(jnp.any(counts < 0)):
      raise ValueError(f"histogram must be non-negative; got min {counts.min()}.")
  total = counts.sum() + num_elements * smoothing
  if _checks.is_concrete(total) and not float(total) > 0:
    raise ValueError("dataset_prior needs at least one observation or smoothing > 0.")
  return (counts + smoothing) / total
