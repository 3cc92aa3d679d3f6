"""Prior losses that regularise the canonicalization network.

The paper's prior (Mondal et al. 2023, Sec. 3) pulls the distribution of predicted
group elements towards the orientations seen in the pretrained model's training data.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from canon_jax import _checks


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
    if bool(jnp.any(prior < 0)) or not bool(
        jnp.allclose(prior.sum(-1), 1.0, atol=1e-4)):
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
