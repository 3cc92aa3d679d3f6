"""The models of a training run: predictor, canonicalizer, and the pipeline joining them.

A *variant* (see :mod:`train.trainer`) is one of

* ``"vanilla"``: the predictor alone, on the images as they are;
* ``"augmentation"``: the predictor alone, trained on randomly transformed images
  (the transformation happens in the update step, see :mod:`train.step`);
* ``"canonicalized"``: :class:`canon_jax.ImageCanonicalizer` followed by the
  predictor on ``result.canonical``.

:class:`Pipeline` applies either form to ``(B, H, W, C)`` float images in [0, 1]
(NHWC) and returns ``(B, num_classes)`` logits. Parameters and batch statistics are
dicts ``{'canonicalizer': {...}, 'predictor': {...}}``; the canonicalizer's entry is
``{}`` for variants without one.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import canon_jax
from canon_jax import models as canon_models

VARIANTS = ("vanilla", "augmentation", "canonicalized")
"""Variant names, in the order a run that trains all three uses."""

NORMALIZATIONS = {
    "imagenet": (canon_models.IMAGENET_MEAN, canon_models.IMAGENET_STD),
    "inception": (canon_models.INCEPTION_MEAN, canon_models.INCEPTION_STD),
}
"""``config.model.normalize`` name -> (mean, std) for images in [0, 1]."""


class SmallCNN(nn.Module):
  """A small VGG-style classifier for the digits demo: ``(B, H, W, C) -> (B, K)``.

  ``len(features)`` stages of (3x3 conv, BatchNorm, ReLU, 2x2 max-pool), then global
  average pooling and the ``head`` Dense layer. H and W must be divisible by
  ``2 ** len(features)``. BatchNorm uses Flax momentum 0.9 and epsilon 1e-5, like
  the pretrained ResNets, so the trainer handles its ``batch_stats`` the same way.

  Attributes:
    num_classes: number of logits K.
    features: channels of each stage.
  """
  num_classes: int = 10
  features: Sequence[int] = (32, 64, 128)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    for i, feats in enumerate(self.features):
      x = nn.Conv(feats, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                  name=f"conv{i}")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       name=f"bn{i}")(x)
      x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="head")(x).astype(jnp.float32)


LOCAL_MODELS = {"small_cnn": SmallCNN}
"""Predictors defined here, beside ``canon_jax.models.MODELS``."""


def model_names() -> list[str]:
  """Every name ``config.model.name`` accepts."""
  return sorted({*LOCAL_MODELS, *canon_models.MODELS})


def build_predictor(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """The predictor named ``model_config.name`` with ``num_classes`` logits.

  ``model_config.kwargs`` holds extra constructor fields (e.g. ``features`` of
  :class:`SmallCNN`, ``dropout_rate`` of a ViT).
  """
  kwargs = dict(model_config.get("kwargs", {}) or {})
  if model_config.name in LOCAL_MODELS:
    return LOCAL_MODELS[model_config.name](num_classes=num_classes, **kwargs)
  return canon_models.get_model(model_config.name, num_classes=num_classes, **kwargs)


def build_canonicalizer(config: ml_collections.ConfigDict) -> nn.Module:
  """``ImageCanonicalizer(group=config.group, **config.canonicalizer)``, or
  ``PointCloudCanonicalizer(**config.canonicalizer)`` when ``config.task == 'points'``."""
  if config.get("task", "images") == "points":
    return canon_jax.PointCloudCanonicalizer(**config.canonicalizer.to_dict())
  return canon_jax.ImageCanonicalizer(group=config.group, **config.canonicalizer.to_dict())


@dataclasses.dataclass(frozen=True)
class Pipeline:
  """Canonicalizer (optional) + predictor, with the predictor's input preprocessing.

  Attributes:
    predictor: the classifier, ``(B, S, S, C) -> (B, K)``.
    canonicalizer: ``None`` for the vanilla and augmentation variants.
    input_size: side S the canonical images are resized to (bilinear, antialiased)
      before the predictor; ``None`` keeps the data's size.
    mean, std: per-channel normalisation ``(x - mean) / std`` applied to the
      predictor's input (after the resize); ``None`` for none.
  """
  predictor: nn.Module
  canonicalizer: canon_jax.ImageCanonicalizer | None = None
  input_size: int | None = None
  mean: tuple[float, ...] | None = None
  std: tuple[float, ...] | None = None

  def predictor_inputs(self, images: jax.Array) -> jax.Array:
    """(B, H, W, C) in [0, 1] -> (B, S, S, C) resized and normalised."""
    if self.input_size is not None and images.shape[1:3] != (self.input_size,) * 2:
      images = jax.image.resize(
          images, (images.shape[0], self.input_size, self.input_size, images.shape[-1]),
          method="linear", antialias=True)
    if self.mean is not None:
      images = canon_models.normalize(images, self.mean, self.std)
    return images

  def init(self, rng: jax.Array, images: jax.Array) -> dict[str, dict[str, Any]]:
    """Fresh variables ``{'params': {...}, 'batch_stats': {...}}`` (two-level dicts).

    Args:
      rng: PRNG key.
      images: (B, H, W, C) example input (only its shape and dtype matter).
    """
    key_c, key_p = jax.random.split(rng)
    params = {"canonicalizer": {}, "predictor": {}}
    stats = {"canonicalizer": {}, "predictor": {}}
    if self.canonicalizer is not None:
      v = self.canonicalizer.init(key_c, images)
      params["canonicalizer"] = v["params"]
      stats["canonicalizer"] = v.get("batch_stats", {})
    v = self.predictor.init(key_p, self.predictor_inputs(images))
    params["predictor"] = v["params"]
    stats["predictor"] = v.get("batch_stats", {})
    return {"params": params, "batch_stats": stats}

  def apply(self, params, batch_stats, images: jax.Array, *, train: bool,
            train_predictor: bool = True, rng: jax.Array | None = None):
    """Runs the pipeline.

    Args:
      params, batch_stats: ``{'canonicalizer': ..., 'predictor': ...}``.
      images: (B, H, W, C) float images in [0, 1].
      train: training mode: straight-through canonicalization, batch statistics.
      train_predictor: with ``train``, whether the predictor runs in training mode
        (batch statistics, dropout); False for a frozen predictor.
      rng: PRNG key for dropout (training only).

    Returns:
      ``(logits (B, K), result, new_batch_stats)``; ``result`` is the
      :class:`canon_jax.CanonicalizationResult` or ``None`` without canonicalizer.
      ``new_batch_stats`` equals ``batch_stats`` outside training.
    """
    new_stats = dict(batch_stats)
    result = None
    if self.canonicalizer is not None:
      variables = {"params": params["canonicalizer"]}
      if batch_stats["canonicalizer"]:
        variables["batch_stats"] = batch_stats["canonicalizer"]
      if train and batch_stats["canonicalizer"]:
        result, updates = self.canonicalizer.apply(
            variables, images, train=True, mutable=["batch_stats"])
        new_stats["canonicalizer"] = updates["batch_stats"]
      else:
        result = self.canonicalizer.apply(variables, images, train=train)
      images = result.canonical
    x = self.predictor_inputs(images)
    variables = {"params": params["predictor"]}
    if batch_stats["predictor"]:
      variables["batch_stats"] = batch_stats["predictor"]
    rngs = {"dropout": rng} if rng is not None else {}
    if train and train_predictor:
      logits, updates = self.predictor.apply(
          variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
      if batch_stats["predictor"]:
        new_stats["predictor"] = updates["batch_stats"]
    else:
      logits = self.predictor.apply(variables, x, train=False)
    return logits, result, new_stats


def build_pipeline(config: ml_collections.ConfigDict, variant: str, num_classes: int,
                   mean_std: tuple[Sequence[float], Sequence[float]] | None) -> Pipeline:
  """The :class:`Pipeline` of ``variant`` (one of :data:`VARIANTS`).

  Args:
    config: the run's config.
    variant: "vanilla", "augmentation" or "canonicalized".
    num_classes: logits of the predictor.
    mean_std: the predictor's input normalisation, from :func:`normalization`.
  """
  mean, std = (None, None) if mean_std is None else (tuple(mean_std[0]), tuple(mean_std[1]))
  return Pipeline(
      predictor=build_predictor(config.model, num_classes),
      canonicalizer=build_canonicalizer(config) if variant == "canonicalized" else None,
      input_size=config.model.input_size, mean=mean, std=std)


# ---------------------------------------------------------------------------------
# Pretrained predictors (orbax checkpoints of ``python -m canon_jax.convert``).
# ---------------------------------------------------------------------------------


def normalization(model_config: ml_collections.ConfigDict
                  ) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
  """The predictor's input normalisation named by ``model_config.normalize``.

  ``"auto"``: the checkpoint's recorded (mean, std) when ``model_config.pretrained``
  is set, else none; ``"imagenet"`` / ``"inception"``: those statistics; ``None``:
  none.
  """
  name = model_config.normalize
  if name is None:
    return None
  if name == "auto":
    if not model_config.pretrained:
      return None
    from canon_jax import convert  # pylint: disable=import-outside-toplevel
    meta = convert.read_metadata(model_config.pretrained)
    return tuple(meta.mean), tuple(meta.std)
  return NORMALIZATIONS[name]


def load_pretrained_predictor(model_config: ml_collections.ConfigDict, num_classes: int,
                              rng: jax.Array) -> dict[str, Any]:
  """Host copies of a converted checkpoint's variables, head resized to ``num_classes``.

  The checkpoint (``canon_jax.convert.load_pretrained``) must hold exactly the
  variables of ``model_config.name`` (a ``ValueError`` lists any difference). When
  its head has another number of classes (ImageNet's 1000), the head is drawn
  afresh with the model's own initialiser (``canon_jax.models.replace_head``).

  Returns:
    ``{'params': ..., 'batch_stats': ...}`` of numpy arrays (every process reads the
    same files, so every process holds the same values).
  """
  from canon_jax import convert  # pylint: disable=import-outside-toplevel
  path = os.path.abspath(model_config.pretrained)
  meta = convert.read_metadata(path)
  kwargs = dict(model_config.get("kwargs", {}) or {})
  if model_config.name not in canon_models.MODELS:
    raise ValueError(
        f"config.model.pretrained needs a model of canon_jax.models.MODELS; got "
        f"config.model.name={model_config.name!r}.")
  if meta.architecture != model_config.name:
    raise ValueError(
        f"config.model.pretrained={path!r} holds a {meta.architecture!r} but "
        f"config.model.name={model_config.name!r}.")
  module = canon_models.get_model(model_config.name, num_classes=meta.num_classes, **kwargs)
  module, variables = convert.load_pretrained(path, module)
  if meta.num_classes != num_classes:
    module, variables = canon_models.replace_head(module, variables, num_classes, rng)
  return jax.tree.map(np.asarray, dict(variables))
