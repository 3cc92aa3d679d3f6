"""Frame averaging over the canonicalizer's top-k poses (probabilistic symmetrization).

Hard canonicalization runs the predictor p once, on g*^-1 . x. When the
canonicalizer is unsure (two poses with similar probability), one wrong pick costs
the whole prediction. Frame averaging (Puny et al. 2022) and probabilistic
symmetrization (Kim et al. 2023) average p over several poses instead; here, at
evaluation time, over the k most probable elements of the canonicalizer:

    P_k(y | x) = sum_{g in top-k} w_g p(y | g^-1 . x),
    w_g = q_g / sum_{h in top-k} q_h,  q = softmax(beta * logits(x)).

k = 1 is the hard canonicalized prediction; k = |G| weights every pose by q. If the
canonicalizer is equivariant (``logits(a . x)[g] = logits(x)[a^-1 g]``) the top-k set
and the weights move with the input, so P_k is invariant for every k (ties aside).
Probabilities (softmax of p's logits), not logits, are averaged.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from canon_jax import _checks, transforms
from canon_jax.groups import from_name

PredictFn = Callable[[jax.Array], jax.Array]


def _check_logits(logits, group, batch):
  _checks.check_rank(logits, "logits", 2, "B, |G|")
  _checks.check_floating(logits, "logits")
  if logits.shape != (batch, group.order):
    raise ValueError(f"logits must have shape (B, |G|) = ({batch}, {group.order}); "
                     f"got {logits.shape}.")


def _check_k(k, order):
  if not isinstance(k, int) or not 1 <= k <= order:
    raise ValueError(f"k must be an int in [1, |G|={order}]; got {k!r}.")


def top_k_weights(logits: jax.Array, k: int, beta: float = 1.0) -> jax.Array:
  """softmax(beta * logits) kept on the k largest logits and renormalised.

  Args:
    logits: (B, |G|) canonicalizer logits.
    k: number of poses kept, 1 <= k <= |G| (static).
    beta: the canonicalizer's softmax temperature (> 0).

  Returns:
    (B, |G|) weights summing to 1, non-zero on exactly k elements per row. Ties
    among the logits keep the lower element index first, as ``argmax`` does, so
    k = 1 gives the one-hot of the canonicalizer's hard element.
  """
  _checks.check_rank(logits, "logits", 2, "B, |G|")
  _check_k(k, logits.shape[-1])
  _, idx = jax.lax.top_k(logits, k)                            # (B, k)
  keep = jnp.any(idx[:, :, None] == jnp.arange(logits.shape[-1]), axis=1)
  # softmax over the kept logits = renormalised softmax; exactly one-hot for k = 1.
  return jax.nn.softmax(jnp.where(keep, beta * logits, -jnp.inf), axis=-1)


def frame_average(predict_fn: PredictFn, images: jax.Array, logits: jax.Array,
                  group, k: int, beta: float = 1.0) -> jax.Array:
  """The predictor averaged over the canonicalizer's top-k canonical inputs.

  Args:
    predict_fn: images (B, H, W, C) -> class logits (B, K): the predictor p alone
      (no canonicalizer in front).
    images: (B, H, W, C) float NHWC inputs as they are.
    logits: (B, |G|) the canonicalizer's logits on ``images`` (``result.logits``),
      indexed so that element g means "canonical input = g^-1 . x".
    group: group or name.
    k: number of poses, 1 <= k <= |G| (static); p runs k times.
    beta: the canonicalizer's softmax temperature.

  Returns:
    (B, K) averaged class probabilities P_k (rows sum to 1).
  """
  group = from_name(group)
  _checks.check_nhwc(images)
  _check_logits(logits, group, images.shape[0])
  _check_k(k, group.order)
  w = top_k_weights(logits, k, beta)
  _, idx = jax.lax.top_k(logits, k)                            # (B, k)
  candidates = jnp.stack([
      transforms.transform_images(images, group, group.inverse(idx[:, j]))
      for j in range(k)])                                      # (k, B, H, W, C)
  probs = jax.nn.softmax(jax.lax.map(predict_fn, candidates).astype(jnp.float32), -1)
  wk = jnp.take_along_axis(w, idx, axis=1)                     # (B, k)
  return jnp.einsum("jbc,bj->bc", probs, wk.astype(jnp.float32))


def frame_averaging_curve(predict_fn: PredictFn, images: jax.Array,
                          logits: jax.Array, group, beta: float = 1.0) -> jax.Array:
  """:func:`frame_average` for every k = 1..|G| at once (p runs |G| times).

  Args:
    predict_fn, images, logits, group, beta: as :func:`frame_average`.

  Returns:
    (|G|, B, K): entry k - 1 is P_k, the average over the top-k poses.
  """
  group = from_name(group)
  _checks.check_nhwc(images)
  _check_logits(logits, group, images.shape[0])
  copies = transforms.all_transforms(images, group)            # copy h = h . x
  probs = jax.nn.softmax(jax.lax.map(predict_fn, copies).astype(jnp.float32), -1)
  probs = probs[group.inverses]                                # row g: p(g^-1 . x)
  _, order = jax.lax.top_k(logits, group.order)                # (B, |G|) best first
  q = jnp.take_along_axis(jax.nn.softmax(beta * logits, -1), order, axis=1)
  sorted_probs = jnp.take_along_axis(
      probs.transpose(1, 0, 2), order[:, :, None], axis=1)     # (B, |G|, K)
  num = jnp.cumsum(q[:, :, None].astype(jnp.float32) * sorted_probs, axis=1)
  den = jnp.cumsum(q.astype(jnp.float32), axis=1)[:, :, None]
  return (num / den).transpose(1, 0, 2)
