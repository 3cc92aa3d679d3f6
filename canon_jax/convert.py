"""torch -> Flax weight conversion of the pretrained predictors, stored as orbax checkpoints.

A converted checkpoint is a directory (:mod:`canon_jax.checkpoint_io`)::

  DIR/metadata.json   format, architecture (a name of canon_jax.models.MODELS, or
                      sam_vit_{b,l,h}), what rebuilds the module, input normalisation,
                      origin of the weights
  DIR/variables/      orbax StandardCheckpointer tree {'params': ..., 'batch_stats'
                      or 'constants': ...}

Command line (thin wrapper around :func:`convert_checkpoint`)::

  python -m canon_jax.convert --arch resnet50 --source torchvision --out DIR
  python -m canon_jax.convert --arch vit_b16 --source timm --weights model.safetensors --out DIR
  python -m canon_jax.convert --arch sam_vit_h --source segment_anything \\
      --weights sam_vit_h_4b8939.pth --out DIR

Without ``--weights`` the official weights are downloaded (needs network). In
Python: ``module, variables = load_pretrained(DIR)`` for any of them; a classifier
takes ``module.apply(variables, canon_jax.models.normalize(images, meta.mean,
meta.std))`` with images ``(B, 224, 224, 3)`` in ``[0, 1]`` and ``meta =
read_metadata(DIR)``; SAM plugs into :func:`canon_jax.models.sam.box_predictor`.

The conversion is checkpoint surgery in small dict -> dict steps: a state dict
``{torch name: array}`` is renamed and re-laid-out by the model's rules (the
``torch_rules`` function beside each model, applied by
:func:`canon_jax.state_dict_rules.torch_to_flax`), then checked strictly against the
Flax model's variables (:func:`canon_jax.checkpoint_io.check_variables`): any missing,
unexpected or mis-shaped key raises a ``ValueError`` listing them all.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from typing import Any, ClassVar, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from canon_jax import checkpoint_io
from canon_jax.checkpoint_io import METADATA_FILE, check_variables, read_state_dict
from canon_jax.models import (ALIASES, IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN,
                              INCEPTION_STD, get_model, resnet, sam, vit)
from canon_jax.state_dict_rules import torch_to_flax

SOURCES = ("torchvision", "timm", "segment_anything")
"""Naming schemes of the state dicts the models' ``torch_rules`` understand."""

_RULES = {resnet.ResNet: resnet.torch_rules, vit.ViT: vit.torch_rules, sam.Sam: sam.torch_rules}

# Official weights. torchvision: the IMAGENET1K_V1 recipes (the classic
# ``pretrained=True``); timm: the default augreg tags (normalised to [-1, 1]); SAM:
# Meta's released checkpoints (plain state dicts).
_TORCHVISION = "https://download.pytorch.org/models/"
_TIMM_HUB = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"
_SAM = "https://dl.fbaipublicfiles.com/segment_anything/"
OFFICIAL_WEIGHTS = {
    ("resnet18", "torchvision"): _TORCHVISION + "resnet18-f37072fd.pth",
    ("resnet34", "torchvision"): _TORCHVISION + "resnet34-b627a593.pth",
    ("resnet50", "torchvision"): _TORCHVISION + "resnet50-0676ba61.pth",
    ("resnet101", "torchvision"): _TORCHVISION + "resnet101-63fe2227.pth",
    ("vit_b16", "torchvision"): _TORCHVISION + "vit_b_16-c867db91.pth",
    ("vit_b16", "timm"): _TIMM_HUB.format("vit_base_patch16_224.augreg2_in21k_ft_in1k"),
    ("vit_s16", "timm"): _TIMM_HUB.format("vit_small_patch16_224.augreg_in21k_ft_in1k"),
    ("vit_ti16", "timm"): _TIMM_HUB.format("vit_tiny_patch16_224.augreg_in21k_ft_in1k"),
    ("sam_vit_b", "segment_anything"): _SAM + "sam_vit_b_01ec64.pth",
    ("sam_vit_l", "segment_anything"): _SAM + "sam_vit_l_0b3195.pth",
    ("sam_vit_h", "segment_anything"): _SAM + "sam_vit_h_4b8939.pth",
}
"""(architecture, source) -> URL of the official weights."""

DEFAULT_NORMALIZATION = {
    "torchvision": (IMAGENET_MEAN, IMAGENET_STD),
    "timm": (INCEPTION_MEAN, INCEPTION_STD),
    "segment_anything": (sam.PIXEL_MEAN, sam.PIXEL_STD),
}
"""source -> (mean, std) of the official weights: for images scaled to [0, 1]
(classifiers), for pixels in [0, 255] (SAM)."""


def _rules_for(module: nn.Module, source: str):
  if source not in SOURCES:
    raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
  for cls, rules in _RULES.items():
    if isinstance(module, cls):
      return rules(source)
  raise ValueError(f"module must be one of {sorted(c.__name__ for c in _RULES)} to be "
                   f"converted from torch, got {type(module).__name__}")


def abstract_variables(module: nn.Module, image_size: int = 224) -> dict[str, Any]:
  """Shapes and dtypes of every variable of ``module`` (``jax.eval_shape``, no compute).

  A classifier is initialised for ``(1, image_size, image_size, 3)`` images (which
  fixes a ViT's position embedding length ``1 + (image_size / patch_size)**2``); a
  SAM for its own ``image_size`` and every prompt kind
  (:func:`canon_jax.models.sam.init_inputs`). The leaves are ``jax.ShapeDtypeStruct``.
  """
  if isinstance(module, sam.Sam):
    inputs = sam.init_inputs(module)
  else:
    inputs = (jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32),)
  return jax.eval_shape(module.init, jax.random.key(0), *inputs)


def convert_state_dict(state_dict: Mapping[str, Any], module: nn.Module, source: str,
                       image_size: int = 224) -> dict[str, Any]:
  """Converts a torch state dict to the variables of ``module``.

  Strict: every torch entry must map to a variable of ``module`` and every variable
  must be filled, with equal shapes (else ``ValueError`` listing the differences).
  Floating arrays are cast to the model's dtype (float32).

  Args:
    state_dict: ``{torch name: array}`` (torch layouts) of torchvision, timm or
      segment_anything.
    module: the Flax model, e.g. ``get_model("resnet50")`` or ``sam.SamViTH()``.
    source: ``"torchvision"``, ``"timm"`` or ``"segment_anything"`` (the naming).
    image_size: input side a classifier is initialised for (see
      :func:`abstract_variables`).

  Returns:
    Nested variables of numpy arrays, ready for ``module.apply``:
    ``{'params', 'batch_stats'}`` (ResNet), ``{'params'}`` (ViT), ``{'params',
    'constants'}`` (SAM).
  """
  flat, unconverted = torch_to_flax(state_dict, _rules_for(module, source))
  expected = checkpoint_io.flatten(abstract_variables(module, image_size))
  check_variables(flat, expected, unconverted, what="state_dict")
  return checkpoint_io.unflatten(
      {k: np.asarray(v, dtype=expected[k].dtype) for k, v in flat.items()})


# ------------------------------------------------------------------------ checkpoints


@dataclasses.dataclass(frozen=True)
class PretrainedMetadata:
  """What ``metadata.json`` records beside the variables of a converted classifier.

  Attributes:
    architecture: a name in ``canon_jax.models.MODELS``.
    source: ``"torchvision"`` or ``"timm"``.
    num_classes: logits of the head.
    image_size: side of the square training images (224 for the official weights).
    mean, std: per-channel RGB normalisation ``(x - mean) / std`` for inputs ``x``
      scaled to ``value_range``.
    origin: URL or file the weights came from.
    value_range: range of the pixel values before normalisation.
    layout: image layout the model takes.
  """
  FORMAT: ClassVar[str] = "canon_jax.pretrained.v1"
  architecture: str
  source: str
  num_classes: int
  image_size: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  origin: str
  value_range: tuple[float, float] = (0.0, 1.0)
  layout: str = "NHWC"

  def module(self) -> nn.Module:
    """The classifier the checkpoint holds the variables of."""
    return get_model(self.architecture, num_classes=self.num_classes)


@dataclasses.dataclass(frozen=True)
class SamMetadata:
  """``metadata.json`` of a converted SAM checkpoint.

  Attributes:
    variant: a key of :data:`canon_jax.models.sam.SAM_VARIANTS`.
    image_size: side of the padded model input (1024 for the released weights).
    pixel_mean, pixel_std: RGB normalisation for pixels in [0, 255].
    origin: URL or file the weights came from.
  """
  FORMAT: ClassVar[str] = "canon_jax.sam.v1"
  variant: str
  image_size: int
  pixel_mean: tuple[float, ...]
  pixel_std: tuple[float, ...]
  origin: str

  @property
  def architecture(self) -> str:
    """``"sam_<variant>"``, the ``--arch`` of ``python -m canon_jax.convert``."""
    return f"sam_{self.variant}"

  def module(self) -> sam.Sam:
    """The :class:`~canon_jax.models.sam.Sam` the checkpoint holds the variables of."""
    if self.variant not in sam.SAM_VARIANTS:
      raise ValueError(f"variant must be one of {sorted(sam.SAM_VARIANTS)}, got "
                       f"{self.variant!r}")
    return sam.SAM_VARIANTS[self.variant](image_size=self.image_size,
                                          pixel_mean=self.pixel_mean,
                                          pixel_std=self.pixel_std)


Metadata = PretrainedMetadata | SamMetadata
_METADATA = {cls.FORMAT: cls for cls in (PretrainedMetadata, SamMetadata)}


def save_pretrained(directory: str, variables: Mapping[str, Any], metadata: Metadata,
                    overwrite: bool = False) -> None:
  """Writes ``variables`` (orbax) and ``metadata`` (JSON) into ``directory``, which
  must be empty or absent unless ``overwrite``."""
  checkpoint_io.write_checkpoint(
      directory, variables, {"format": metadata.FORMAT, **dataclasses.asdict(metadata)},
      overwrite)


def read_metadata(directory: str) -> Metadata:
  """Reads ``directory/metadata.json`` of a checkpoint written by :func:`save_pretrained`."""
  data = checkpoint_io.read_checkpoint_metadata(directory)
  fmt = data.pop("format", None)
  if fmt not in _METADATA:
    raise ValueError(f"{os.path.join(directory, METADATA_FILE)} must have a format in "
                     f"{sorted(_METADATA)}, got {fmt!r}")
  return _METADATA[fmt](**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def load_pretrained(directory: str, module: nn.Module | None = None
                    ) -> tuple[nn.Module, dict[str, Any]]:
  """Loads a converted checkpoint (classifier or SAM): ``(module, variables)``.

  Args:
    directory: written by :func:`save_pretrained` or ``python -m canon_jax.convert``.
    module: the model to load into; by default the one the metadata describes
      (a classifier with the checkpoint's ``num_classes``, or the SAM variant with
      its image size and pixel normalisation). Its variables must match the
      checkpoint's keys and shapes exactly, else ``ValueError`` listing the
      differing keys.

  Returns:
    The module and its variables (``jax.Array``); a classifier's inputs must be
    normalised as ``read_metadata(directory)`` says.
  """
  metadata = read_metadata(directory)
  module = metadata.module() if module is None else module
  abstract = abstract_variables(module, metadata.image_size)
  return module, checkpoint_io.restore_checkpoint(
      directory, abstract, what=f"checkpoint {metadata.architecture!r}")


# -------------------------------------------------------------------------- download


def download_weights(url: str, cache_dir: str, timeout_s: float = 60.0) -> str:
  """Downloads ``url`` into ``cache_dir`` (once) and returns the local path.

  Raises ``RuntimeError`` saying what to do when the network is unreachable.
  """
  name = re.sub(r"[^A-Za-z0-9._-]+", "_", url.split("://", 1)[-1])
  path = os.path.join(cache_dir, name)
  if os.path.isfile(path):
    return path
  os.makedirs(cache_dir, exist_ok=True)
  fd, partial = tempfile.mkstemp(dir=cache_dir, suffix=".partial")
  try:
    with urllib.request.urlopen(url, timeout=timeout_s) as response, os.fdopen(fd, "wb") as f:
      shutil.copyfileobj(response, f)
  except (urllib.error.URLError, OSError, TimeoutError) as error:
    os.remove(partial)
    raise RuntimeError(
        f"could not download {url} ({error}). This machine seems to have no network "
        "access: download the file elsewhere and pass it with --weights FILE "
        "(weights=... in Python).") from error
  os.replace(partial, path)
  return path


def _metadata_for(arch: str, source: str, state_dict: Mapping[str, Any], origin: str,
                  mean: Sequence[float] | None, std: Sequence[float] | None,
                  image_size: int | None) -> Metadata:
  """What rebuilds ``arch``'s module for ``state_dict``; a classifier's ``num_classes``
  is read from its head."""
  mean, std = (tuple(given or default)
               for given, default in zip((mean, std), DEFAULT_NORMALIZATION[source]))
  if source == "segment_anything":
    variant = arch.removeprefix("sam_")
    if not arch.startswith("sam_") or variant not in sam.SAM_VARIANTS:
      raise ValueError(f"arch must be one of {sorted('sam_' + v for v in sam.SAM_VARIANTS)} "
                       f"for source='segment_anything', got {arch!r}")
    return SamMetadata(variant, image_size or 1024, mean, std, origin)
  flat, _ = torch_to_flax(state_dict, _rules_for(get_model(arch), source))
  if "params/head/bias" not in flat:
    raise ValueError(f"weights {origin!r} must contain a classification head for {arch!r}")
  return PretrainedMetadata(
      architecture=arch, source=source, num_classes=int(flat["params/head/bias"].shape[0]),
      image_size=image_size or 224, mean=mean, std=std, origin=origin)


def convert_checkpoint(arch: str, source: str, out: str, weights: str | None = None,
                       mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                       image_size: int | None = None, cache_dir: str | None = None,
                       overwrite: bool = False) -> Metadata:
  """Converts torch weights for ``arch`` into the checkpoint directory ``out``.

  Args:
    arch: model name in ``canon_jax.models.MODELS`` (``resnet18`` ... ``vit_ti16``)
      or an alias of one (``canon_jax.models.ALIASES``: ``vit_b_16``, ...; the
      metadata records the ``MODELS`` name), or ``sam_vit_b``/``sam_vit_l``/
      ``sam_vit_h`` (``sam_tiny`` for tests).
    source: ``"torchvision"``, ``"timm"`` or ``"segment_anything"`` naming of the
      weights.
    out: checkpoint directory to create.
    weights: local ``.pth``/``.pt``/``.bin``/``.safetensors`` file; ``None``
      downloads ``OFFICIAL_WEIGHTS[(arch, source)]``.
    mean, std: input normalisation to record; default ``DEFAULT_NORMALIZATION[source]``.
    image_size: training resolution of a classifier's weights (fixes the ViT
      position embedding), default 224; SAM's input side, default 1024.
    cache_dir: download cache, default ``~/.cache/canon_jax``.
    overwrite: replace an existing ``out``.

  Returns:
    The metadata written beside the variables.
  """
  if source not in SOURCES:
    raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
  arch = ALIASES.get(arch, arch)   # torchvision's / timm's spellings
  if weights is None:
    if (arch, source) not in OFFICIAL_WEIGHTS:
      raise ValueError(f"no official {source} weights for arch={arch!r}; known: "
                       f"{sorted(OFFICIAL_WEIGHTS)}. Pass weights=FILE.")
    origin = OFFICIAL_WEIGHTS[(arch, source)]
    weights = download_weights(
        origin, cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "canon_jax"))
  else:
    origin = os.path.abspath(weights)
  state_dict = read_state_dict(weights)
  metadata = _metadata_for(arch, source, state_dict, origin, mean, std, image_size)
  variables = convert_state_dict(state_dict, metadata.module(), source, metadata.image_size)
  save_pretrained(out, variables, metadata, overwrite)
  return metadata


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m canon_jax.convert", description=__doc__.split("\n", 1)[0])
  parser.add_argument("--arch", required=True,
                      help="e.g. resnet50, vit_b16, vit_s16, vit_ti16, sam_vit_h (or "
                      "torchvision's / timm's spelling: vit_b_16, vit_base_patch16_224)")
  parser.add_argument("--source", required=True, choices=SOURCES)
  parser.add_argument("--out", required=True, help="checkpoint directory to create")
  parser.add_argument("--weights", help="local .pth/.pt/.bin/.safetensors (default: download)")
  parser.add_argument("--mean", type=float, nargs=3, help="RGB mean (default: per source)")
  parser.add_argument("--std", type=float, nargs=3, help="RGB std (default: per source)")
  parser.add_argument("--image_size", type=int,
                      help="input side (default: 224; 1024 for SAM)")
  parser.add_argument("--cache_dir", help="download cache (default ~/.cache/canon_jax)")
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args(argv)
  metadata = convert_checkpoint(
      args.arch, args.source, args.out, args.weights, args.mean, args.std, args.image_size,
      args.cache_dir, args.overwrite)
  print(json.dumps(dataclasses.asdict(metadata), indent=2))


__all__ = [
    "DEFAULT_NORMALIZATION", "METADATA_FILE", "OFFICIAL_WEIGHTS", "PretrainedMetadata",
    "SOURCES", "SamMetadata", "abstract_variables", "check_variables", "convert_checkpoint",
    "convert_state_dict", "download_weights", "load_pretrained", "main", "read_metadata",
    "read_state_dict", "save_pretrained", "torch_to_flax",
]

if __name__ == "__main__":
  try:
    main(sys.argv[1:])
  except (ValueError, RuntimeError) as error:
    sys.exit(f"error: {error}")
