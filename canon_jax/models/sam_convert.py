"""Converts Segment Anything checkpoints (``sam_vit_{b,l,h}_*.pth``) into orbax.

A converted SAM checkpoint is a directory::

  DIR/metadata.json   {"format": "canon_jax.sam.v1", variant, image_size,
                       pixel_mean, pixel_std (for [0, 255] pixels), origin}
  DIR/variables/      orbax StandardCheckpointer tree {'params': ..., 'constants': ...}

Command line (needs torch to read ``.pth``; without ``--weights`` the official
checkpoint is downloaded, which needs network)::

  python -m canon_jax.models.sam_convert --variant vit_h \\
      --weights sam_vit_h_4b8939.pth --out checkpoints/sam_vit_h

In Python: ``module, variables = load_sam(DIR)``; then
``segmentation.segment(sam.box_predictor(module, variables), result, boxes)``.

The conversion follows :mod:`canon_jax.convert`: per-layer renaming rules
(:func:`canon_jax.convert.torch_to_flax`; conv OIHW -> HWIO, Linear (out, in) -> (in,
out), ConvTranspose (in, out, kh, kw) -> (kh, kw, in, out), embeddings and relative
position tables as they are, the Fourier matrix into ``constants``) and a strict
check (:func:`canon_jax.convert.check_variables`): any missing, unexpected or
mis-shaped entry raises a ``ValueError`` listing them all.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Mapping, Sequence

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from canon_jax import convert
from canon_jax.convert import CONV_LEAVES, DENSE_LEAVES, LAYERNORM_LEAVES, leaf_to
from canon_jax.models.sam import PIXEL_MEAN, PIXEL_STD, SAM_VARIANTS, Sam

_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
OFFICIAL_WEIGHTS = {
    "vit_b": _URL + "sam_vit_b_01ec64.pth",
    "vit_l": _URL + "sam_vit_l_0b3195.pth",
    "vit_h": _URL + "sam_vit_h_4b8939.pth",
}
"""Variant -> URL of Meta's released SAM checkpoint (a plain state dict)."""

METADATA_FILE = convert.METADATA_FILE
VARIABLES_DIR = convert.VARIABLES_DIR
_FORMAT = "canon_jax.sam.v1"

_EMBEDDING = {"weight": leaf_to("params", "")}  # the leaf is named by the rule's template
_CONV_TRANSPOSE = {
    "weight": leaf_to("params", "kernel", lambda w: np.transpose(w, (2, 3, 0, 1))),
    "bias": leaf_to("params", "bias"),
}
_BLOCK = r"image_encoder\.blocks\.(\d+)"
_LAYER = r"mask_decoder\.transformer\.layers\.(\d+)"
_ATTN = r"(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
SAM_RULES = (
    (r"image_encoder", "image_encoder", {"pos_embed": leaf_to("params", "pos_embed")}),
    (r"image_encoder\.patch_embed\.proj", "image_encoder/patch_embed", CONV_LEAVES),
    (_BLOCK + r"\.norm(\d)", r"image_encoder/blocks_\1/norm\2", LAYERNORM_LEAVES),
    (_BLOCK + r"\.attn", r"image_encoder/blocks_\1/attn", {
        "rel_pos_h": leaf_to("params", "rel_pos_h"), "rel_pos_w": leaf_to("params", "rel_pos_w")}),
    (_BLOCK + r"\.attn\.(qkv|proj)", r"image_encoder/blocks_\1/attn/\2", DENSE_LEAVES),
    (_BLOCK + r"\.mlp\.(lin\d)", r"image_encoder/blocks_\1/\2", DENSE_LEAVES),
    (r"image_encoder\.neck\.([02])", r"image_encoder/neck_\1", CONV_LEAVES),
    (r"image_encoder\.neck\.([13])", r"image_encoder/neck_\1", LAYERNORM_LEAVES),
    (r"prompt_encoder\.pe_layer", "prompt_encoder", {
        "positional_encoding_gaussian_matrix":
            leaf_to("constants", "positional_encoding_gaussian_matrix")}),
    (r"prompt_encoder\.point_embeddings\.(\d)", r"prompt_encoder/point_embeddings_\1",
     _EMBEDDING),
    (r"prompt_encoder\.(not_a_point_embed|no_mask_embed)", r"prompt_encoder/\1", _EMBEDDING),
    (r"prompt_encoder\.mask_downscaling\.([036])", r"prompt_encoder/mask_downscaling_\1",
     CONV_LEAVES),
    (r"prompt_encoder\.mask_downscaling\.([14])", r"prompt_encoder/mask_downscaling_\1",
     LAYERNORM_LEAVES),
    (r"mask_decoder\.(iou_token|mask_tokens)", r"mask_decoder/\1", _EMBEDDING),
    (_LAYER + r"\." + _ATTN + r"\.([qkv]_proj|out_proj)",
     r"mask_decoder/transformer/layers_\1/\2/\3", DENSE_LEAVES),
    (_LAYER + r"\.(norm\d)", r"mask_decoder/transformer/layers_\1/\2", LAYERNORM_LEAVES),
    (_LAYER + r"\.mlp\.(lin\d)", r"mask_decoder/transformer/layers_\1/\2", DENSE_LEAVES),
    (r"mask_decoder\.transformer\.final_attn_token_to_image\.([qkv]_proj|out_proj)",
     r"mask_decoder/transformer/final_attn_token_to_image/\1", DENSE_LEAVES),
    (r"mask_decoder\.transformer\.norm_final_attn", "mask_decoder/transformer/norm_final_attn",
     LAYERNORM_LEAVES),
    (r"mask_decoder\.output_upscaling\.([03])", r"mask_decoder/output_upscaling_\1",
     _CONV_TRANSPOSE),
    (r"mask_decoder\.output_upscaling\.1", "mask_decoder/output_upscaling_1", LAYERNORM_LEAVES),
    (r"mask_decoder\.output_hypernetworks_mlps\.(\d+)\.layers\.(\d+)",
     r"mask_decoder/output_hypernetworks_mlps_\1/layers_\2", DENSE_LEAVES),
    (r"mask_decoder\.iou_prediction_head\.layers\.(\d+)",
     r"mask_decoder/iou_prediction_head/layers_\1", DENSE_LEAVES),
)
"""``(torch module regex, Flax module path, {leaf: converter})`` for ``segment_anything``'s
``Sam.state_dict()`` names (see :func:`canon_jax.convert.torch_to_flax`)."""


def abstract_sam_variables(module: Sam) -> dict[str, Any]:
  """Shapes and dtypes of every variable of ``module`` (``jax.eval_shape``, no compute).

  Initialises with every prompt kind so that every parameter is created.
  """
  s, e = module.image_size, module.embedding_size
  args = (jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32),
          jax.ShapeDtypeStruct((1, 1, 4), jnp.float32),
          jax.ShapeDtypeStruct((1, 1, 1, 2), jnp.float32),
          jax.ShapeDtypeStruct((1, 1, 1), jnp.int32),
          jax.ShapeDtypeStruct((1, 1, 4 * e, 4 * e), jnp.float32))
  return jax.eval_shape(module.init, jax.random.key(0), *args)


def convert_sam_state_dict(state_dict: Mapping[str, Any], module: Sam) -> dict[str, Any]:
  """``segment_anything`` ``Sam.state_dict()`` -> ``{'params', 'constants'}`` of ``module``.

  Strict: every torch entry must map to a variable of ``module`` and every variable
  must be filled with an equal shape, else ``ValueError`` listing the differences.
  Arrays are cast to float32 (no copy when they already are).
  """
  flat, unconverted = convert.torch_to_flax(state_dict, SAM_RULES)
  expected = flax.traverse_util.flatten_dict(abstract_sam_variables(module), sep="/")
  convert.check_variables(flat, expected, unconverted, what="state_dict")
  return flax.traverse_util.unflatten_dict(
      {k: np.asarray(v, dtype=expected[k].dtype) for k, v in flat.items()}, sep="/")


@dataclasses.dataclass(frozen=True)
class SamMetadata:
  """``metadata.json`` of a converted SAM checkpoint.

  Attributes:
    variant: a key of :data:`canon_jax.models.sam.SAM_VARIANTS`.
    image_size: side of the padded model input (1024 for the released weights).
    pixel_mean, pixel_std: RGB normalisation for pixels in [0, 255].
    origin: URL or file the weights came from.
  """
  variant: str
  image_size: int
  pixel_mean: tuple[float, ...]
  pixel_std: tuple[float, ...]
  origin: str


def save_sam(directory: str, variables: Mapping[str, Any], metadata: SamMetadata,
             overwrite: bool = False) -> None:
  """Writes ``variables`` (orbax) and ``metadata`` (JSON) into ``directory``."""
  convert.write_checkpoint(directory, variables,
                           {"format": _FORMAT, **dataclasses.asdict(metadata)}, overwrite)


def read_sam_metadata(directory: str) -> SamMetadata:
  """Reads ``directory/metadata.json`` written by :func:`save_sam`."""
  data = convert.read_checkpoint_metadata(directory, _FORMAT, "a converted SAM checkpoint")
  return SamMetadata(**{**data, "pixel_mean": tuple(data["pixel_mean"]),
                        "pixel_std": tuple(data["pixel_std"])})


def sam_module(metadata: SamMetadata) -> Sam:
  """The :class:`Sam` a checkpoint's metadata describes."""
  if metadata.variant not in SAM_VARIANTS:
    raise ValueError(f"variant must be one of {sorted(SAM_VARIANTS)}, got "
                     f"{metadata.variant!r}")
  return SAM_VARIANTS[metadata.variant](image_size=metadata.image_size,
                                        pixel_mean=metadata.pixel_mean,
                                        pixel_std=metadata.pixel_std)


def load_sam(directory: str) -> tuple[Sam, dict[str, Any]]:
  """Loads a converted SAM checkpoint: ``(module, {'params': ..., 'constants': ...})``.

  The stored keys and shapes must equal the module's exactly (else ``ValueError``
  listing the differing keys).
  """
  metadata = read_sam_metadata(directory)
  module = sam_module(metadata)
  abstract = abstract_sam_variables(module)
  path = os.path.join(os.path.abspath(directory), VARIABLES_DIR)
  checkpointer = ocp.StandardCheckpointer()
  stored = checkpointer.metadata(path).item_metadata
  stored = flax.traverse_util.flatten_dict(dict(getattr(stored, "tree", stored)), sep="/")
  convert.check_variables(stored, flax.traverse_util.flatten_dict(abstract, sep="/"),
                          what=f"checkpoint {metadata.variant!r}")
  return module, checkpointer.restore(path, abstract)


def convert_sam_checkpoint(variant: str, out: str, weights: str | None = None,
                           cache_dir: str | None = None,
                           overwrite: bool = False) -> SamMetadata:
  """Converts SAM weights for ``variant`` ("vit_b", "vit_l", "vit_h") into ``out``.

  Args:
    variant: model size.
    out: checkpoint directory to create.
    weights: local ``.pth`` state dict (e.g. ``sam_vit_h_4b8939.pth``); ``None``
      downloads ``OFFICIAL_WEIGHTS[variant]``.
    cache_dir: download cache, default ``~/.cache/canon_jax``.
    overwrite: replace an existing ``out``.
  """
  if variant not in OFFICIAL_WEIGHTS:
    raise ValueError(f"variant must be one of {sorted(OFFICIAL_WEIGHTS)}, got {variant!r}")
  if weights is None:
    origin = OFFICIAL_WEIGHTS[variant]
    weights = convert.download_weights(
        origin, cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "canon_jax"))
  else:
    origin = os.path.abspath(weights)
  metadata = SamMetadata(variant, 1024, PIXEL_MEAN, PIXEL_STD, origin)
  variables = convert_sam_state_dict(convert.read_state_dict(weights), sam_module(metadata))
  save_sam(out, variables, metadata, overwrite)
  return metadata


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m canon_jax.models.sam_convert",
                                   description=__doc__.split("\n", 1)[0])
  parser.add_argument("--variant", required=True, choices=sorted(OFFICIAL_WEIGHTS))
  parser.add_argument("--out", required=True, help="checkpoint directory to create")
  parser.add_argument("--weights", help="local sam_vit_*.pth (default: download)")
  parser.add_argument("--cache_dir", help="download cache (default ~/.cache/canon_jax)")
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args(argv)
  metadata = convert_sam_checkpoint(args.variant, args.out, args.weights, args.cache_dir,
                                    args.overwrite)
  print(json.dumps(dataclasses.asdict(metadata), indent=2))


if __name__ == "__main__":
  try:
    main(sys.argv[1:])
  except (ValueError, RuntimeError) as error:
    sys.exit(f"error: {error}")
