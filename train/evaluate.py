"""Evaluation under the group: every test image in all |G| poses.

For a test batch ``x`` (B images) the eval step builds the |G| copies ``g . x``
(:func:`canon_jax.all_transforms`: exact for multiples of 90 degrees, bilinear with
edge extension otherwise), runs the variant's pipeline in inference mode on all of
them at once, and returns per-copy class predictions and canonicalizer elements,
replicated on every process. The host concatenates them over the test set and
scores them with :mod:`canon_jax.metrics`:

* ``accuracy``: on the test set as it is (copy 0, the identity);
* ``per_element_accuracy``: (|G|,) accuracy on each transformed copy;
* ``g_averaged_accuracy``: their mean;
* ``invariance_rate``: fraction of images whose prediction is the same in all poses;
* ``identity_rate``: fraction of upright images the canonicalizer maps to the
  identity (1 without canonicalizer: the identity is always applied);
* ``orientation_alignment``: KL and total variation between the identity prior and
  the histogram of elements predicted on the upright test set;
* ``canonicalizer_equivariance_rate``: fraction of images whose predicted element
  moves exactly with the input, ``element(g . x) = g o element(x)`` for every g
  (``None`` without canonicalizer).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

import canon_jax
from train.models import Pipeline

EvalOutputs = dict[str, jax.Array]


def make_eval_step(pipeline: Pipeline, group: canon_jax.DiscreteGroup
                   ) -> Callable[[dict, dict, dict], EvalOutputs]:
  """``eval_step(params, batch_stats, batch) -> outputs`` (pure; jit it).

  ``batch``: ``image`` (B, H, W, C), ``label`` (B,), ``mask`` (B,). Outputs:
  ``predictions`` (|G|, B) int32 classes and ``elements`` (|G|, B) int32
  canonicalizer elements (zeros without canonicalizer), copy g computed on
  ``g . image``; and the batch's ``label`` and ``mask`` (so that, jitted with
  replicated outputs, every process can score the whole batch).
  """

  def eval_step(params, batch_stats, batch):
    images = batch["image"]
    b = images.shape[0]
    copies = canon_jax.all_transforms(images, group)          # (|G|, B, H, W, C)
    flat = copies.reshape((group.order * b,) + images.shape[1:])
    logits, result, _ = pipeline.apply(params, batch_stats, flat, train=False)
    predictions = jnp.argmax(logits, axis=-1).astype(jnp.int32).reshape(group.order, b)
    if result is None:
      elements = jnp.zeros((group.order, b), jnp.int32)
    else:
      elements = result.element.reshape(group.order, b)
    return {"predictions": predictions, "elements": elements, "label": batch["label"],
            "mask": batch["mask"]}

  return eval_step


def make_visualize(pipeline: Pipeline, group: canon_jax.DiscreteGroup, num_images: int
                   ) -> Callable[[dict, dict, jax.Array], dict[str, jax.Array]]:
  """``visualize(params, batch_stats, images) -> {'inputs', 'canonical', 'elements'}``.

  For the first ``num_images`` images N of ``images`` (B, H, W, C): ``inputs``
  (|G|, N, H, W, C) are the transformed copies ``g . x``, ``canonical`` the
  canonicalizer's outputs on them (equal across g for an invariant pipeline), and
  ``elements`` (|G|, N) the predicted elements. Needs a canonicalizer.
  """
  if pipeline.canonicalizer is None:
    raise ValueError("visualize needs the canonicalized variant's pipeline.")

  def visualize(params, batch_stats, images):
    x = images[:num_images]
    copies = canon_jax.all_transforms(x, group)
    flat = copies.reshape((-1,) + x.shape[1:])
    variables = {"params": params["canonicalizer"]}
    if batch_stats["canonicalizer"]:
      variables["batch_stats"] = batch_stats["canonicalizer"]
    result = pipeline.canonicalizer.apply(variables, flat, train=False)
    return {"inputs": copies, "canonical": result.canonical.reshape(copies.shape),
            "elements": result.element.reshape(group.order, -1)}

  return visualize


def gather_outputs(outputs: Iterable[EvalOutputs]) -> dict[str, np.ndarray]:
  """Concatenates per-batch eval outputs over the test set (host, numpy).

  Args:
    outputs: :func:`make_eval_step` outputs, one per global batch, fully
      replicated (readable on every process).

  Returns:
    ``predictions`` (|G|, N), ``elements`` (|G|, N), ``labels`` (N,), ``mask`` (N,)
    with N the padded test-set size.
  """
  preds, elements, labels, masks = [], [], [], []
  for out in outputs:
    out = jax.device_get(out)  # host sync after every batch (see the trainer)
    preds.append(np.asarray(out["predictions"]))
    elements.append(np.asarray(out["elements"]))
    labels.append(np.asarray(out["label"]))
    masks.append(np.asarray(out["mask"]))
  if not preds:
    raise ValueError("the evaluation split gave no batch; check config.data.eval_split.")
  return {"predictions": np.concatenate(preds, 1), "elements": np.concatenate(elements, 1),
          "labels": np.concatenate(labels), "mask": np.concatenate(masks)}


def score(gathered: dict[str, np.ndarray], group: canon_jax.DiscreteGroup,
          has_canonicalizer: bool) -> dict[str, Any]:
  """Metrics of one variant from :func:`gather_outputs` (floats and lists, JSON-ready).

  Keys: ``accuracy``, ``g_averaged_accuracy``, ``per_element_accuracy`` (list of
  |G|), ``identity_rate``, ``invariance_rate``, ``orientation_alignment``
  (``{'kl', 'total_variation', 'histogram'}``), ``canonicalizer_equivariance_rate``
  and ``num_examples``. Accuracies are fractions in [0, 1].
  """
  preds = jnp.asarray(gathered["predictions"])
  elements = jnp.asarray(gathered["elements"])
  labels = jnp.asarray(gathered["labels"])
  mask = jnp.asarray(gathered["mask"], jnp.float32)
  per = canon_jax.per_element_accuracy(preds, labels, mask)
  align = canon_jax.orientation_alignment(elements[0], None, group.order, mask)
  equivariance = None
  if has_canonicalizer:
    expected = jnp.asarray(group.table)[jnp.arange(group.order)[:, None], elements[0][None]]
    moves = jnp.all(elements == expected, axis=0).astype(jnp.float32)
    equivariance = float(jnp.sum(moves * mask) / jnp.maximum(jnp.sum(mask), 1.0))
  return {
      "accuracy": float(per[0]),
      "g_averaged_accuracy": float(canon_jax.group_averaged_accuracy(preds, labels, mask)),
      "per_element_accuracy": [float(a) for a in per],
      "identity_rate": float(canon_jax.identity_rate(elements[0], mask)),
      "invariance_rate": float(canon_jax.invariance_rate(preds, mask)),
      "orientation_alignment": {
          "kl": float(align["kl"]), "total_variation": float(align["total_variation"]),
          "histogram": [float(h) for h in align["histogram"]]},
      "canonicalizer_equivariance_rate": equivariance,
      "num_examples": int(np.sum(gathered["mask"])),
  }
