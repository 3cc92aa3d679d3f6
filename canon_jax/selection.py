"""Selecting one group element from logits, differentiably: Gumbel straight-through.

The canonicalizer must pick *one* element g* (the canonical input is g*^-1 . x), yet
the task loss has to reach the logits. Two estimators give a one-hot forward value
and a softmax gradient:

* softmax straight-through (:func:`canon_jax.straight_through_weights`): forward
  one-hot(argmax(logits)), deterministic;
* Gumbel straight-through (:func:`gumbel_straight_through_weights`, Jang et al. 2017,
  "Categorical reparameterization with Gumbel-softmax"): forward one-hot of
  argmax(logits + Gumbel noise), a *sample* from softmax(logits), so in training the
  predictor also sees the less likely poses, in proportion to their probability.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from canon_jax import _checks


def gumbel_straight_through_weights(logits: jax.Array, key: jax.Array,
                                    tau: float = 1.0) -> jax.Array:
  """Hard Gumbel-softmax weights: one-hot sample forward, relaxed gradient backward.

  With g ~ Gumbel(0, 1) i.i.d. of the shape of ``logits``:
  ``onehot(argmax(logits + g)) + (s - stop_gradient(s))``,
  ``s = softmax((logits + g) / tau)``.

  Args:
    logits: (..., |G|) unnormalised log-probabilities (scale them first, e.g. by the
      canonicalizer's ``beta``: the sampled element follows softmax(logits)).
    key: a PRNG key; the noise is drawn once per call.
    tau: temperature (> 0) of the relaxation that carries the gradient; it does not
      change the forward value.

  Returns:
    (..., |G|) weights of the dtype of ``logits``: forward value exactly one-hot at
    argmax(logits + g), distributed as softmax(logits) over keys; gradient that of
    softmax((logits + g) / tau).

  >>> import jax, jax.numpy as jnp
  >>> w = gumbel_straight_through_weights(jnp.zeros((2, 4)), jax.random.key(0))
  >>> w.sum(-1).tolist(), sorted(set(w.ravel().tolist()))
  ([1.0, 1.0], [0.0, 1.0])
  """
  _checks.check_floating(logits, "logits")
  if jnp.ndim(logits) < 1:
    raise ValueError(f"logits must have a last axis of group elements (..., |G|); "
                     f"got shape {jnp.shape(logits)}.")
  if not tau > 0:
    raise ValueError(f"tau must be > 0; got {tau}.")
  noise = jax.random.gumbel(key, logits.shape, dtype=logits.dtype)
  perturbed = logits + noise
  soft = jax.nn.softmax(perturbed / tau, axis=-1)
  hard = jax.nn.one_hot(jnp.argmax(perturbed, axis=-1), logits.shape[-1],
                        dtype=soft.dtype)
  # (soft - stop_gradient(soft)) is exactly 0 forward, so the sum is exactly one-hot
  # (hard + soft - stop_gradient(soft) would round 1 + s - s to 1 - 2^-24).
  return hard + (soft - jax.lax.stop_gradient(soft))
