"""Config validation that runs before any data is read or anything is compiled.

:func:`validate_config` checks names, ranges and divisibility and raises a
``ValueError`` naming the field, the expected and the actual value. It touches no
device: no JAX computation runs (and so nothing compiles) before it passes.
"""
from __future__ import annotations

import dataclasses
import os

import ml_collections
import tensorflow_datasets as tfds

import canon_jax
from train.models import IMAGE_CANONICALIZERS, NORMALIZATIONS, VARIANTS, model_names

LOCAL_DATASETS = ("canon_digits", "rotmnist")
"""Dataset names ``canon_jax.data.get_image_dataset`` knows besides TFDS names."""

STAGE_FIELDS = ("init", "num_steps", "optimizer", "predictor_lr", "canonicalizer_lr",
                "momentum", "weight_decay", "schedule", "warmup_steps", "prior_weight",
                "freeze_predictor", "augment")
"""Fields of each variant's sub-config (``config.vanilla``, ...); optional: ``prior``
(one of :data:`PRIORS`, default "identity") and ``prior_temperature``."""

PRIORS = ("identity", "model_confidence", "dataset")


def _fail(field: str, expected: str, got) -> None:
  raise ValueError(f"config.{field} must be {expected}; got {got!r}.")


def _check_int(config, field: str, minimum: int) -> None:
  value = config
  for part in field.split("."):
    value = value[part]
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    _fail(field, f"an integer >= {minimum}", value)


def _check_dataset(name: str) -> None:
  if not isinstance(name, str) or not name:
    _fail("data.name", "a dataset name", name)
  if name in LOCAL_DATASETS:
    return
  try:
    tfds.builder_cls(name.split("/")[0].split(":")[0])
  except tfds.core.DatasetNotFoundError:
    raise ValueError(
        f"config.data.name must be one of {list(LOCAL_DATASETS)} or a TFDS dataset "
        f"name (e.g. 'cifar10', 'cifar100', 'stl10', 'mnist'); got {name!r}.") from None


def _check_stage(config: ml_collections.ConfigDict, variant: str, earlier: list[str]) -> None:
  if variant not in config:
    _fail(variant, "a sub-config with fields " + ", ".join(STAGE_FIELDS), None)
  stage = config[variant]
  missing = [f for f in STAGE_FIELDS if f not in stage]
  if missing:
    raise ValueError(f"config.{variant} lacks fields {missing}; it needs "
                     f"{list(STAGE_FIELDS)}.")
  if stage.init != "pretrained" and stage.init not in earlier:
    _fail(f"{variant}.init", f"'pretrained' or a variant trained before it {earlier}",
          stage.init)
  _check_int(config, f"{variant}.num_steps", 0)
  _check_int(config, f"{variant}.warmup_steps", 0)
  if stage.optimizer not in ("sgd", "adam", "adamw"):
    _fail(f"{variant}.optimizer", "'sgd', 'adam' or 'adamw'", stage.optimizer)
  if stage.schedule not in ("constant", "cosine", "multistep"):
    _fail(f"{variant}.schedule", "'constant', 'cosine' or 'multistep'", stage.schedule)
  for field in ("predictor_lr", "canonicalizer_lr", "momentum", "weight_decay",
                "prior_weight"):
    value = stage[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
      _fail(f"{variant}.{field}", "a number >= 0", value)
  for field in ("freeze_predictor", "augment"):
    if not isinstance(stage[field], bool):
      _fail(f"{variant}.{field}", "True or False", stage[field])
  if stage.get("prior", "identity") not in PRIORS:
    _fail(f"{variant}.prior", f"one of {list(PRIORS)}", stage.get("prior"))
  if stage.get("prior", "identity") != "identity" and config.get("task", "images") != (
      "images"):
    _fail(f"{variant}.prior", "'identity' for point clouds", stage.get("prior"))
  if not float(stage.get("prior_temperature", 0.1)) > 0:
    _fail(f"{variant}.prior_temperature", "a number > 0", stage.get("prior_temperature"))
  if variant == "vanilla" and stage.augment:
    _fail("vanilla.augment", "False (the 'augmentation' variant is the augmented "
          "predictor)", stage.augment)


POINT_DATASETS = ("canon_shapes", "modelnet40_hdf5")
"""Dataset names ``canon_jax.data.get_point_cloud_dataset`` knows (with configs)."""
ROTATION_MODES = ("none", "z", "so3")


def _check_canonicalizer_fields(config: ml_collections.ConfigDict, cls: type,
                                set_by_trainer: tuple[str, ...] = (),
                                extra: tuple[str, ...] = ()) -> None:
  """``config.canonicalizer`` holds only fields of the module ``cls`` (but
  ``set_by_trainer``) and the config-only keys ``extra``."""
  fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name",
                                                         *set_by_trainer}
  unknown = sorted(set(config.canonicalizer) - fields - set(extra))
  if unknown:
    _fail("canonicalizer", f"fields of canon_jax.{cls.__name__} {sorted(fields)}",
          unknown)


def _check_points(config: ml_collections.ConfigDict,
                  datasets: tuple[str, ...] = POINT_DATASETS) -> None:
  """The fields of a point-cloud run (``config.task == 'points'``, or 'parts' with
  the part datasets)."""
  name = config.data.name
  if not isinstance(name, str) or name.split("/")[0] not in datasets:
    _fail("data.name", f"one of {list(datasets)} (e.g. '{datasets[0]}/small')", name)
  for field in ("train_rotation", "test_rotation"):
    if config.data.get(field) not in ROTATION_MODES:
      _fail(f"data.{field}", f"one of {list(ROTATION_MODES)}", config.data.get(field))
  _check_int(config, "data.num_test_poses", 1)
  if config.model.normalize is not None or config.model.input_size is not None:
    _fail("model.normalize and model.input_size", "None for point clouds",
          (config.model.normalize, config.model.input_size))
  _check_canonicalizer_fields(config, canon_jax.PointCloudCanonicalizer)


def _check_image_canonicalizer(config: ml_collections.ConfigDict) -> None:
  kind = config.canonicalizer.get("type", "equivariant")
  if kind not in IMAGE_CANONICALIZERS:
    _fail("canonicalizer.type", f"one of {sorted(IMAGE_CANONICALIZERS)}", kind)
  _check_canonicalizer_fields(config, IMAGE_CANONICALIZERS[kind], set_by_trainer=("group",),
                              extra=("type",))
  if kind != "equivariant":
    net = config.canonicalizer.get("network")
    if not net or net.get("name") not in model_names():
      _fail("canonicalizer.network.name", f"one of {model_names()}",
            net.get("name") if net else net)
    if kind == "optimized":
      _check_int(config, "canonicalizer.network.features", 1)


PART_DATASETS = ("canon_parts", "shapenet_part_hdf5")
"""Dataset names ``canon_jax.data.get_parts_dataset`` knows (with configs)."""


def _check_nbody(config: ml_collections.ConfigDict) -> None:
  """The fields of an n-body run (``config.task == 'nbody'``)."""
  from canon_jax.nbody import NBodyCanonicalizer  # pylint: disable=import-outside-toplevel
  name = config.data.name
  if not isinstance(name, str) or name.split("/")[0] != "canon_nbody":
    _fail("data.name", "'canon_nbody' or 'canon_nbody/tiny'", name)
  for field in ("train_rotation", "test_rotation"):
    if config.data.get(field) not in ("none", "so3"):
      _fail(f"data.{field}", "'none' or 'so3'", config.data.get(field))
  _check_int(config, "data.num_test_poses", 1)
  std = config.data.get("translation_std")
  if isinstance(std, bool) or not isinstance(std, (int, float)) or std < 0:
    _fail("data.translation_std", "a number >= 0", std)
  _check_canonicalizer_fields(config, NBodyCanonicalizer)


def validate_config(config: ml_collections.ConfigDict, device_count: int,
                    process_count: int = 1) -> None:
  """Raises ``ValueError`` on a config the trainer cannot run.

  Args:
    config: a training config (see ``train/configs/digits_c8.py`` for the fields).
    device_count: devices of the mesh (all processes).
    process_count: number of processes.
  """
  task = config.get("task", "images")
  if task == "points":
    _check_points(config)
  elif task == "parts":
    _check_points(config, PART_DATASETS)
  elif task == "nbody":
    _check_nbody(config)
  elif task == "images":
    try:
      canon_jax.from_name(config.group)
    except (ValueError, TypeError) as e:
      raise ValueError(f"config.group must name a group such as 'C4', 'C8' or 'D4'; "
                       f"got {config.group!r} ({e}).") from None
    _check_dataset(config.data.name)
    _check_image_canonicalizer(config)
  else:
    _fail("task", "'images', 'points', 'parts' or 'nbody'", task)
  if config.model.name not in model_names():
    _fail("model.name", f"one of {model_names()}", config.model.name)
  if config.model.pretrained and not os.path.isdir(config.model.pretrained):
    _fail("model.pretrained", "None or the directory of a checkpoint written by "
          "`python -m canon_jax.convert`", config.model.pretrained)
  if config.model.normalize not in (None, "auto", *NORMALIZATIONS):
    _fail("model.normalize", f"None, 'auto' or one of {sorted(NORMALIZATIONS)}",
          config.model.normalize)
  if config.model.input_size is not None:
    _check_int(config, "model.input_size", 1)
  if config.data.get("image_size") is not None:
    _check_int(config, "data.image_size", 1)

  for field in ("batch_size", "eval_batch_size"):
    _check_int(config, field, 1)
    size = config[field]
    if size % device_count:
      raise ValueError(
          f"config.{field} must be divisible by the number of devices ({device_count}) "
          f"so that every device gets an equal share; got {size}.")
    if size % process_count:
      raise ValueError(f"config.{field} must be divisible by the number of processes "
                       f"({process_count}); got {size}.")
  for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    _check_int(config, field, 1)
  _check_int(config, "num_visualize", 0)

  variants = list(config.variants)
  if not variants or any(v not in VARIANTS for v in variants) or len(set(variants)) != len(
      variants):
    _fail("variants", f"a non-empty sequence of distinct names from {list(VARIANTS)}",
          tuple(variants))
  for i, variant in enumerate(variants):
    _check_stage(config, variant, variants[:i])
