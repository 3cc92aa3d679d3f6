"""The models of a training run: predictor, canonicalizer, and the model joining them.

A *variant* (see :mod:`train.trainer`) is one of

* ``"vanilla"``: the predictor alone, on the inputs as they are;
* ``"augmentation"``: the predictor alone, trained on randomly transformed inputs
  (the transformation happens in the update step, see :mod:`train.step`);
* ``"canonicalized"``: a canonicalizer followed by the predictor on the canonical
  input.

:func:`variant_spec` turns a variant's name and config block into explicit fields
(:class:`VariantSpec`) once; :func:`build_model` builds its
:class:`canon_jax.CanonicalizedModel`, whose variables are ``{'params':
{'canonicalizer': ..., 'predictor': ...}, 'batch_stats': {...}}`` (no
``'canonicalizer'`` entry without one).
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


def _nbody_mlp(**kwargs) -> nn.Module:
  from canon_jax.nbody import NBodyMLP  # pylint: disable=import-outside-toplevel
  return NBodyMLP(**kwargs)


LOCAL_MODELS = {"small_cnn": SmallCNN, "nbody_mlp": _nbody_mlp}
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


IMAGE_CANONICALIZERS = {
    "equivariant": canon_jax.ImageCanonicalizer,
    "optimized": canon_jax.OptimizedGroupCanonicalizer,
    "optimized_rotation": canon_jax.OptimizedRotationCanonicalizer,
}
"""``config.canonicalizer.type`` -> the image canonicalizer class it builds."""


def build_canonicalizer(config: ml_collections.ConfigDict) -> nn.Module:
  """The canonicalizer of ``config.canonicalizer``.

  Point clouds (``config.task`` 'points' or 'parts'): ``PointCloudCanonicalizer(
  **fields)``; n-body ('nbody'): ``NBodyCanonicalizer(**fields)``. Images: by
  ``type`` (default "equivariant"): ``ImageCanonicalizer(group=config.group,
  **fields)``; "optimized" / "optimized_rotation": the optimization-based
  canonicalizers (:mod:`canon_jax.opt_canonicalize`) around any network, named by
  ``network`` (``{'name': a predictor name, 'kwargs': {...}, 'features': D}``: the
  network is that model with D outputs, used as a feature extractor; for
  "optimized_rotation" D is 2).
  """
  fields = config.canonicalizer.to_dict()
  task = config.get("task", "images")
  if task in ("points", "parts"):
    return canon_jax.PointCloudCanonicalizer(**fields)
  if task == "nbody":
    from canon_jax.nbody import NBodyCanonicalizer  # pylint: disable=import-outside-toplevel
    return NBodyCanonicalizer(**fields)
  kind = fields.pop("type", "equivariant")
  if kind == "equivariant":
    return canon_jax.ImageCanonicalizer(group=config.group, **fields)
  net = ml_collections.ConfigDict(fields.pop("network"))
  dim = 2 if kind == "optimized_rotation" else int(net.features)
  network = build_predictor(net, dim)
  return IMAGE_CANONICALIZERS[kind](network=network, group=config.group, **fields)


@dataclasses.dataclass(frozen=True)
class VariantSpec:
  """What a variant is, as explicit fields (the trainer never compares names).

  Attributes:
    canonicalize: a canonicalizer runs in front of the predictor.
    augment: training inputs are transformed by random group elements (images) or
      rotations (point clouds: "so3" instead of ``config.data.train_rotation``);
      with a canonicalizer, the prior's target moves with the applied element.
    prior_weight: weight of the canonicalizer's prior in the loss.
    freeze_predictor: the predictor is not trained (inference mode, zero updates).
    prior: the prior's target (images): "identity" (element 0, or the applied
      element with ``augment``), "model_confidence" (per input, softmax over G of
      the predictor's confidence on each candidate canonical input at temperature
      ``prior_temperature``; :func:`canon_jax.model_confidence_prior`) or "dataset"
      (one distribution over G estimated before training from the predictor's most
      confident pose on training batches; :func:`canon_jax.dataset_prior`).
    prior_temperature: tau of the model-confidence prior.
  """
  canonicalize: bool
  augment: bool
  prior_weight: float
  freeze_predictor: bool
  prior: str = "identity"
  prior_temperature: float = 0.1


def variant_spec(config: ml_collections.ConfigDict, variant: str) -> VariantSpec:
  """The :class:`VariantSpec` of ``variant`` (one of :data:`VARIANTS`) and its stage.

  vanilla: the predictor alone on the data as it is; augmentation: the predictor
  alone on randomly transformed inputs; canonicalized: canonicalizer + predictor,
  the stage's ``prior_weight``, ``augment`` and (optional fields) ``prior``,
  ``prior_temperature``.
  """
  stage = config[variant]
  canonicalize = variant == "canonicalized"
  return VariantSpec(
      canonicalize=canonicalize,
      augment=variant == "augmentation" or (canonicalize and bool(stage.augment)),
      prior_weight=float(stage.prior_weight) if canonicalize else 0.0,
      freeze_predictor=bool(stage.freeze_predictor) or stage.predictor_lr == 0,
      prior=stage.get("prior", "identity"),
      prior_temperature=float(stage.get("prior_temperature", 0.1)))


def build_model(config: ml_collections.ConfigDict, spec: VariantSpec, num_classes: int,
                mean_std: tuple[Sequence[float], Sequence[float]] | None
                ) -> canon_jax.CanonicalizedModel:
  """The :class:`canon_jax.CanonicalizedModel` of a variant
  (:class:`canon_jax.NBodyModel` for ``config.task == 'nbody'``).

  Args:
    config: the run's config.
    spec: the variant (:func:`variant_spec`).
    num_classes: logits of the predictor.
    mean_std: the predictor's input normalisation, from :func:`normalization`.
  """
  if config.get("task", "images") == "nbody":
    from canon_jax.nbody import NBodyModel  # pylint: disable=import-outside-toplevel
    return NBodyModel(
        predictor=build_predictor(config.model, num_classes),
        canonicalizer=build_canonicalizer(config) if spec.canonicalize else None,
        freeze_predictor=spec.freeze_predictor)
  mean, std = (None, None) if mean_std is None else (tuple(mean_std[0]), tuple(mean_std[1]))
  return canon_jax.CanonicalizedModel(
      predictor=build_predictor(config.model, num_classes),
      canonicalizer=build_canonicalizer(config) if spec.canonicalize else None,
      input_size=config.model.get("input_size"), mean=mean, std=std,
      freeze_predictor=spec.freeze_predictor)


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
