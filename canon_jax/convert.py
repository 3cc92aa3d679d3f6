"""torch -> Flax weight conversion for the pretrained predictors, stored as orbax checkpoints.

A converted checkpoint is a directory::

  DIR/metadata.json   architecture (a name of canon_jax.models.MODELS), source,
                      num_classes, image_size, input normalisation, origin
  DIR/variables/      orbax StandardCheckpointer tree {'params': ..., 'batch_stats': ...}

Command line (thin wrapper around :func:`convert_checkpoint`)::

  python -m canon_jax.convert --arch resnet50 --source torchvision --out DIR
  python -m canon_jax.convert --arch vit_b16 --source timm --weights model.safetensors --out DIR

Without ``--weights`` the official ImageNet weights are downloaded (needs network).
In Python: ``module, variables = load_pretrained(DIR)``, then
``module.apply(variables, normalize_imagenet(images))`` with images ``(B, 224, 224, 3)``
in ``[0, 1]`` (see :func:`read_metadata` for the normalisation of each checkpoint).

The conversion is checkpoint surgery in small dict -> dict steps: a state dict
``{torch name: array}`` is renamed and re-laid-out by per-layer rules
(:func:`torch_to_flax`; NCHW/OIHW conv kernels -> HWIO, Linear ``(out, in)`` ->
``(in, out)``, BatchNorm ``running_*`` -> ``batch_stats``, fused q/k/v split), then
checked strictly against the Flax model's variables (:func:`check_variables`): any
missing, unexpected or mis-shaped key raises a ``ValueError`` listing them all.
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
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from canon_jax.models import (IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD,
                              ResNet, ViT, canonical_name, get_model)

SOURCES = ("torchvision", "timm")
"""Naming schemes of the state dicts :func:`torch_to_flax` understands."""

METADATA_FILE = "metadata.json"
VARIABLES_DIR = "variables"
_FORMAT = "canon_jax.pretrained.v1"

# Official ImageNet-1k weights. torchvision: the IMAGENET1K_V1 recipes (the classic
# ``pretrained=True``); timm: the default augreg tags (normalised to [-1, 1]).
_TORCHVISION = "https://download.pytorch.org/models/"
_TIMM_HUB = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"
OFFICIAL_WEIGHTS = {
    ("resnet18", "torchvision"): _TORCHVISION + "resnet18-f37072fd.pth",
    ("resnet34", "torchvision"): _TORCHVISION + "resnet34-b627a593.pth",
    ("resnet50", "torchvision"): _TORCHVISION + "resnet50-0676ba61.pth",
    ("resnet101", "torchvision"): _TORCHVISION + "resnet101-63fe2227.pth",
    ("vit_b16", "torchvision"): _TORCHVISION + "vit_b_16-c867db91.pth",
    ("vit_b16", "timm"): _TIMM_HUB.format("vit_base_patch16_224.augreg2_in21k_ft_in1k"),
    ("vit_s16", "timm"): _TIMM_HUB.format("vit_small_patch16_224.augreg_in21k_ft_in1k"),
    ("vit_ti16", "timm"): _TIMM_HUB.format("vit_tiny_patch16_224.augreg_in21k_ft_in1k"),
}
"""(architecture, source) -> URL of the official ImageNet-1k weights."""

DEFAULT_NORMALIZATION = {
    "torchvision": (IMAGENET_MEAN, IMAGENET_STD),
    "timm": (INCEPTION_MEAN, INCEPTION_STD),
}
"""source -> (mean, std) of the official weights, for images scaled to [0, 1]."""


# --------------------------------------------------------------------------- reading


def _unwrap(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
  for key in ("state_dict", "model"):
    if isinstance(checkpoint.get(key), Mapping):
      return checkpoint[key]
  return checkpoint


def _read_torch(path: str) -> dict[str, np.ndarray]:
  import torch  # pylint: disable=import-outside-toplevel  # optional dependency

  checkpoint = _unwrap(torch.load(path, map_location="cpu", weights_only=True))
  state_dict = {}
  for name, value in checkpoint.items():
    if not isinstance(value, torch.Tensor):
      raise TypeError(f"state dict entry {name!r} in {path} must be a tensor, got "
                      f"{type(value).__name__}")
    value = value.detach()
    if value.dtype == torch.bfloat16:
      value = value.float()
    state_dict[name] = value.numpy()
  return state_dict


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a torch state dict as ``{name: numpy array}``, in torch layouts.

  ``.safetensors`` files are read with ``safetensors.numpy`` (no torch needed);
  ``.pth``/``.pt``/``.bin`` with ``torch.load(weights_only=True)`` (torch imported
  only then). A checkpoint wrapping the state dict under ``'state_dict'`` or
  ``'model'`` is unwrapped.
  """
  if not os.path.isfile(path):
    raise ValueError(f"path must be an existing weights file, got {path!r}")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel

    return dict(load_file(path))
  if path.endswith((".pth", ".pt", ".bin")):
    return _read_torch(path)
  raise ValueError(
      f"path must end in .safetensors, .pth, .pt or .bin, got {os.path.basename(path)!r}")


# ------------------------------------------------------------------- leaf conversions

# A leaf converter maps one torch array to [(collection, path inside the module, array)].
LeafConverter = Callable[[np.ndarray], list[tuple[str, tuple[str, ...], np.ndarray]]]


def _oihw_to_hwio(kernel: np.ndarray) -> np.ndarray:
  if kernel.ndim != 4:
    raise ValueError(f"conv weight must be 4-d (O, I, H, W), got shape {kernel.shape}")
  return np.transpose(kernel, (2, 3, 1, 0))


def _out_in_to_in_out(kernel: np.ndarray) -> np.ndarray:
  if kernel.ndim != 2:
    raise ValueError(f"linear weight must be 2-d (out, in), got shape {kernel.shape}")
  return np.transpose(kernel)


def leaf_to(collection: str, name: str,
            layout: Callable[[np.ndarray], np.ndarray] = np.asarray) -> LeafConverter:
  """A torch leaf -> the Flax leaf ``collection/<module>/name``, re-laid out by ``layout``
  (the building block of the conversion rules; ``sam_convert`` uses it too)."""
  return lambda value: [(collection, (name,), layout(value))]


def _drop(value: np.ndarray) -> list:
  del value
  return []


def _split_qkv(name: str, layout: Callable[[np.ndarray], np.ndarray] = np.asarray
               ) -> LeafConverter:
  """Fused ``[q; k; v]`` rows (3D, ...) -> ``query``/``key``/``value`` leaves."""

  def convert(value):
    if value.shape[0] % 3:
      raise ValueError(f"fused qkv must have 3 * D rows, got shape {value.shape}")
    return [("params", (part, name), layout(x))
            for part, x in zip(("query", "key", "value"), np.split(value, 3, axis=0))]

  return convert


# Leaf converters of common torch modules (public: canon_jax.models.sam_convert uses them).
CONV_LEAVES = {"weight": leaf_to("params", "kernel", _oihw_to_hwio),
               "bias": leaf_to("params", "bias")}
DENSE_LEAVES = {"weight": leaf_to("params", "kernel", _out_in_to_in_out),
                "bias": leaf_to("params", "bias")}
BATCHNORM_LEAVES = {
    "weight": leaf_to("params", "scale"),
    "bias": leaf_to("params", "bias"),
    "running_mean": leaf_to("batch_stats", "mean"),
    "running_var": leaf_to("batch_stats", "var"),
    "num_batches_tracked": _drop,
}
LAYERNORM_LEAVES = {"weight": leaf_to("params", "scale"), "bias": leaf_to("params", "bias")}

# Rules: (torch module path regex, Flax module path template, {leaf name: converter}).
_TORCHVISION_RESNET = (
    (r"conv1", "conv1", CONV_LEAVES),
    (r"bn1", "bn1", BATCHNORM_LEAVES),
    (r"layer(\d+)\.(\d+)\.conv(\d+)", r"layer\1_\2/conv\3", CONV_LEAVES),
    (r"layer(\d+)\.(\d+)\.bn(\d+)", r"layer\1_\2/bn\3", BATCHNORM_LEAVES),
    (r"layer(\d+)\.(\d+)\.downsample\.0", r"layer\1_\2/downsample_conv", CONV_LEAVES),
    (r"layer(\d+)\.(\d+)\.downsample\.1", r"layer\1_\2/downsample_bn", BATCHNORM_LEAVES),
    (r"fc", "head", DENSE_LEAVES),
)
_BLOCK_TV = r"encoder\.layers\.encoder_layer_(\d+)"
_TORCHVISION_VIT = (
    (r"", "", {"class_token": leaf_to("params", "cls")}),
    (r"conv_proj", "embedding", CONV_LEAVES),
    (r"encoder", "", {"pos_embedding": leaf_to("params", "pos_embedding")}),
    (_BLOCK_TV + r"\.ln_(\d)", r"encoderblock_\1/ln_\2", LAYERNORM_LEAVES),
    (_BLOCK_TV + r"\.self_attention", r"encoderblock_\1/attention", {
        "in_proj_weight": _split_qkv("kernel", _out_in_to_in_out),
        "in_proj_bias": _split_qkv("bias"),
    }),
    (_BLOCK_TV + r"\.self_attention\.out_proj", r"encoderblock_\1/attention/out", DENSE_LEAVES),
    # "linear_1"/"linear_2": MLPBlock names of checkpoints saved before torchvision 0.14.
    (_BLOCK_TV + r"\.mlp\.(?:0|linear_1)", r"encoderblock_\1/mlp/fc1", DENSE_LEAVES),
    (_BLOCK_TV + r"\.mlp\.(?:3|linear_2)", r"encoderblock_\1/mlp/fc2", DENSE_LEAVES),
    (r"encoder\.ln", "encoder_norm", LAYERNORM_LEAVES),
    (r"heads\.head", "head", DENSE_LEAVES),
)
_TIMM_VIT = (
    (r"", "", {"cls_token": leaf_to("params", "cls"),
               "pos_embed": leaf_to("params", "pos_embedding")}),
    (r"patch_embed\.proj", "embedding", CONV_LEAVES),
    (r"blocks\.(\d+)\.norm(\d)", r"encoderblock_\1/ln_\2", LAYERNORM_LEAVES),
    (r"blocks\.(\d+)\.attn\.qkv", r"encoderblock_\1/attention", {
        "weight": _split_qkv("kernel", _out_in_to_in_out),
        "bias": _split_qkv("bias"),
    }),
    (r"blocks\.(\d+)\.attn\.proj", r"encoderblock_\1/attention/out", DENSE_LEAVES),
    (r"blocks\.(\d+)\.mlp\.fc(\d)", r"encoderblock_\1/mlp/fc\2", DENSE_LEAVES),
    (r"norm", "encoder_norm", LAYERNORM_LEAVES),
    (r"head", "head", DENSE_LEAVES),
)
_RULES = {
    (ResNet, "torchvision"): _TORCHVISION_RESNET,
    (ViT, "torchvision"): _TORCHVISION_VIT,
    (ViT, "timm"): _TIMM_VIT,
}


def _rules_for(module: nn.Module, source: str):
  if source not in SOURCES:
    raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
  for (cls, rule_source), rules in _RULES.items():
    if isinstance(module, cls) and rule_source == source:
      return rules
  supported = sorted(f"{cls.__name__}/{s}" for cls, s in _RULES)
  raise ValueError(f"no {source} conversion for {type(module).__name__}; supported: {supported}")


# ------------------------------------------------------------------------ conversion


def torch_to_flax(state_dict: Mapping[str, Any], rules: Sequence[tuple[str, str, Mapping]]
                  ) -> tuple[dict[str, np.ndarray], list[str]]:
  """Renames and re-lays-out a torch state dict into flat Flax variables.

  Args:
    state_dict: ``{torch name: array}`` in torch layouts.
    rules: ``(module regex, Flax module template, {leaf: converter})`` triples; a
      torch name ``"<module>.<leaf>"`` is converted by the first rule whose regex
      fully matches ``<module>`` and that knows ``<leaf>``.

  Returns:
    ``(flat, unconverted)``: ``{"params/layer1_0/conv1/kernel": array, ...}`` (keys
    are ``collection/module path/leaf``) and the torch names no rule converts.
  """
  flat, unconverted = {}, []
  for name, value in state_dict.items():
    module_path, _, leaf = name.rpartition(".")
    for pattern, template, leaves in rules:
      match = re.fullmatch(pattern, module_path)
      if match and leaf in leaves:
        break
    else:
      unconverted.append(name)
      continue
    target = match.expand(template)
    for collection, sub_path, array in leaves[leaf](np.asarray(value)):
      key = "/".join(p for p in (collection, target, *sub_path) if p)
      if key in flat:
        raise ValueError(f"state_dict has two entries for {key!r} (second: {name!r})")
      flat[key] = array
  return flat, unconverted


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, Mapping):
      flat.update(_flatten(value, path))
    else:
      flat[path] = value
  return flat


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split("/")
    node = tree
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = value
  return tree


def abstract_variables(module: nn.Module, image_size: int = 224) -> dict[str, Any]:
  """Shapes and dtypes of ``module.init`` for ``(1, image_size, image_size, 3)`` images.

  Nothing is computed (``jax.eval_shape``); the leaves are ``jax.ShapeDtypeStruct``.
  """
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  return jax.eval_shape(module.init, jax.random.key(0), images)


def check_variables(found: Mapping[str, Any], expected: Mapping[str, Any],
                    unconverted: Sequence[str] = (), what: str = "checkpoint") -> None:
  """Raises ``ValueError`` unless ``found`` has exactly the keys and shapes of ``expected``.

  Args:
    found: flat ``{"collection/path": array-like with .shape}`` from a checkpoint.
    expected: flat ``{"collection/path": ShapeDtypeStruct}`` of the model.
    unconverted: checkpoint entries that have no Flax name (reported as unexpected).
    what: how to call ``found`` in the message.
  """
  missing = sorted(set(expected) - set(found))
  unexpected = sorted(set(found) - set(expected)) + sorted(unconverted)
  mismatched = [f"{k}: model {tuple(expected[k].shape)} vs {what} {tuple(found[k].shape)}"
                for k in sorted(set(found) & set(expected))
                if tuple(found[k].shape) != tuple(expected[k].shape)]
  if missing or unexpected or mismatched:
    raise ValueError(
        f"{what} does not match the model.\n"
        f"  missing keys (in the model, not in the {what}): {missing}\n"
        f"  unexpected keys (in the {what}, not in the model): {unexpected}\n"
        f"  shape mismatches: {mismatched}")


def convert_state_dict(state_dict: Mapping[str, Any], module: nn.Module, source: str,
                       image_size: int = 224) -> dict[str, Any]:
  """Converts a torch state dict to ``{'params': ..., 'batch_stats': ...}`` of ``module``.

  Strict: every torch entry must map to a variable of ``module`` and every variable
  must be filled, with equal shapes (else ``ValueError`` listing the differences).
  Floating arrays are cast to the model's dtype (float32).

  Args:
    state_dict: ``{torch name: array}`` from torchvision or timm (torch layouts).
    module: the Flax model, e.g. ``get_model("resnet50")``.
    source: ``"torchvision"`` or ``"timm"`` (the naming scheme).
    image_size: input side the model is initialised for (fixes the ViT position
      embedding length ``1 + (image_size / patch_size)**2``).

  Returns:
    Nested variables of numpy arrays, ready for ``module.apply``.
  """
  flat, unconverted = torch_to_flax(state_dict, _rules_for(module, source))
  expected = _flatten(abstract_variables(module, image_size))
  check_variables(flat, expected, unconverted, what="state_dict")
  return _unflatten({k: np.asarray(v, dtype=expected[k].dtype) for k, v in flat.items()})


# ------------------------------------------------------------------------ checkpoints


@dataclasses.dataclass(frozen=True)
class PretrainedMetadata:
  """What ``metadata.json`` records beside the variables of a converted checkpoint.

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
  architecture: str
  source: str
  num_classes: int
  image_size: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  origin: str
  value_range: tuple[float, float] = (0.0, 1.0)
  layout: str = "NHWC"


def save_pretrained(directory: str, variables: Mapping[str, Any], metadata: PretrainedMetadata,
                    overwrite: bool = False) -> None:
  """Writes ``variables`` (orbax) and ``metadata`` (JSON) into ``directory``."""
  write_checkpoint(directory, variables, {"format": _FORMAT, **dataclasses.asdict(metadata)},
                   overwrite)


def write_checkpoint(directory: str, variables: Mapping[str, Any], metadata: dict[str, Any],
                     overwrite: bool = False) -> None:
  """Writes ``variables`` (orbax, ``VARIABLES_DIR``) and a metadata dict (JSON,
  ``METADATA_FILE``) into ``directory``, which must be empty unless ``overwrite``."""
  directory = os.path.abspath(directory)
  if os.path.exists(directory) and os.listdir(directory):
    if not overwrite:
      raise ValueError(f"directory must be empty or absent (or pass overwrite=True), "
                       f"got existing {directory!r}")
    shutil.rmtree(directory)
  os.makedirs(directory, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(directory, VARIABLES_DIR), jax.tree.map(jnp.asarray, variables))
  with open(os.path.join(directory, METADATA_FILE), "w") as f:
    json.dump(metadata, f, indent=2)


def read_checkpoint_metadata(directory: str, fmt: str, what: str = "a converted checkpoint"
                             ) -> dict[str, Any]:
  """Reads ``directory/METADATA_FILE``, checks its ``format`` is ``fmt``, returns the rest."""
  path = os.path.join(directory, METADATA_FILE)
  if not os.path.isfile(path):
    raise ValueError(f"directory must hold {what} with {METADATA_FILE}, got {directory!r}")
  with open(path) as f:
    data = json.load(f)
  if data.pop("format", None) != fmt:
    raise ValueError(f"{path} must have format {fmt!r}")
  return data


def read_metadata(directory: str) -> PretrainedMetadata:
  """Reads ``directory/metadata.json`` of a checkpoint written by :func:`save_pretrained`."""
  data = read_checkpoint_metadata(directory, _FORMAT)
  for key in ("mean", "std", "value_range"):
    data[key] = tuple(data[key])
  return PretrainedMetadata(**data)


def load_pretrained(directory: str, module: nn.Module | None = None
                    ) -> tuple[nn.Module, dict[str, Any]]:
  """Loads a converted checkpoint: ``(module, {'params': ..., 'batch_stats': ...})``.

  Args:
    directory: written by :func:`save_pretrained` or ``python -m canon_jax.convert``.
    module: the model to load into; by default the checkpoint's architecture with
      its ``num_classes``. Its variables must match the checkpoint's keys and shapes
      exactly, else ``ValueError`` listing the differing keys.

  Returns:
    The module and its variables (``jax.Array``); inputs must be normalised as
    ``read_metadata(directory)`` says.
  """
  metadata = read_metadata(directory)
  if module is None:
    module = get_model(metadata.architecture, num_classes=metadata.num_classes)
  abstract = abstract_variables(module, metadata.image_size)
  path = os.path.join(os.path.abspath(directory), VARIABLES_DIR)
  checkpointer = ocp.StandardCheckpointer()
  stored = checkpointer.metadata(path).item_metadata
  check_variables(_flatten(getattr(stored, "tree", stored)), _flatten(abstract),
                  what=f"checkpoint {metadata.architecture!r}")
  return module, checkpointer.restore(path, abstract)


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


def convert_checkpoint(arch: str, source: str, out: str, weights: str | None = None,
                       mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                       image_size: int = 224, cache_dir: str | None = None,
                       overwrite: bool = False) -> PretrainedMetadata:
  """Converts torch weights for ``arch`` into the checkpoint directory ``out``.

  Args:
    arch: model name in ``canon_jax.models.MODELS`` (``resnet18`` ... ``vit_ti16``)
      or an alias of one (``canon_jax.models.ALIASES``: ``vit_b_16``, ...); the
      metadata records the ``MODELS`` name.
    source: ``"torchvision"`` or ``"timm"`` naming of the weights.
    out: checkpoint directory to create.
    weights: local ``.pth``/``.pt``/``.bin``/``.safetensors`` file; ``None``
      downloads ``OFFICIAL_WEIGHTS[(arch, source)]``.
    mean, std: input normalisation to record; default ``DEFAULT_NORMALIZATION[source]``.
    image_size: training resolution of the weights (fixes the ViT position embedding).
    cache_dir: download cache, default ``~/.cache/canon_jax``.
    overwrite: replace an existing ``out``.

  Returns:
    The metadata written beside the variables. ``num_classes`` is read from the
    checkpoint's head.
  """
  if source not in SOURCES:
    raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
  arch = canonical_name(arch)
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
  flat, _ = torch_to_flax(state_dict, _rules_for(get_model(arch), source))
  if "params/head/bias" not in flat:
    raise ValueError(f"weights {origin!r} must contain a classification head for {arch!r}")
  num_classes = int(flat["params/head/bias"].shape[0])
  module = get_model(arch, num_classes=num_classes)
  variables = convert_state_dict(state_dict, module, source, image_size)
  default_mean, default_std = DEFAULT_NORMALIZATION[source]
  metadata = PretrainedMetadata(
      architecture=arch, source=source, num_classes=num_classes, image_size=image_size,
      mean=tuple(mean or default_mean), std=tuple(std or default_std), origin=origin)
  save_pretrained(out, variables, metadata, overwrite)
  return metadata


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m canon_jax.convert", description=__doc__.split("\n", 1)[0])
  parser.add_argument("--arch", required=True, help="e.g. resnet50, vit_b16, vit_s16, vit_ti16 "
                      "(or torchvision's / timm's spelling: vit_b_16, vit_base_patch16_224)")
  parser.add_argument("--source", required=True, choices=SOURCES)
  parser.add_argument("--out", required=True, help="checkpoint directory to create")
  parser.add_argument("--weights", help="local .pth/.pt/.bin/.safetensors (default: download)")
  parser.add_argument("--mean", type=float, nargs=3, help="RGB mean (default: per source)")
  parser.add_argument("--std", type=float, nargs=3, help="RGB std (default: per source)")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--cache_dir", help="download cache (default ~/.cache/canon_jax)")
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args(argv)
  metadata = convert_checkpoint(
      args.arch, args.source, args.out, args.weights, args.mean, args.std, args.image_size,
      args.cache_dir, args.overwrite)
  print(json.dumps(dataclasses.asdict(metadata), indent=2))


if __name__ == "__main__":
  try:
    main(sys.argv[1:])
  except (ValueError, RuntimeError) as error:
    sys.exit(f"error: {error}")
