"""Checkpoint files: torch state dicts in, strict variable checks, orbax directories out.

Nothing here knows a model. A pretrained directory is::

  DIR/metadata.json   {"format": ..., what the model needs to be rebuilt}
  DIR/variables/      orbax StandardCheckpointer tree ({'params': ..., ...})

:func:`check_variables` is the one strict comparison of a checkpoint's variables with
a model's: conversion, loading and the trainer's merge of a pretrained predictor all
call it, and it lists every missing, unexpected and mis-shaped key at once.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

METADATA_FILE = "metadata.json"
VARIABLES_DIR = "variables"


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


# ---------------------------------------------------------------------- strict check


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """``{'params': {'conv1': {'kernel': x}}}`` -> ``{'params/conv1/kernel': x}``.

  A flat mapping (no mapping values) comes back unchanged.
  """
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, Mapping):
      flat.update(flatten(value, path))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """The inverse of :func:`flatten`."""
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split("/")
    node = tree
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = value
  return tree


def check_variables(found: Mapping[str, Any], expected: Mapping[str, Any],
                    unconverted: Sequence[str] = (), what: str = "checkpoint") -> None:
  """Raises ``ValueError`` unless ``found`` has exactly the keys and shapes of ``expected``.

  Args:
    found: nested or flat (``"collection/path"`` keys) variables of a checkpoint;
      leaves are arrays or anything with a ``.shape``.
    expected: the model's variables in the same form, e.g. ``jax.eval_shape`` of
      its ``init`` (``jax.ShapeDtypeStruct`` leaves).
    unconverted: checkpoint entries that have no Flax name (reported as unexpected).
    what: how to call ``found`` in the message.
  """
  found, expected = flatten(found), flatten(expected)
  missing = sorted(set(expected) - set(found))
  unexpected = sorted(set(found) - set(expected)) + sorted(unconverted)
  mismatched = [f"{k}: model {np.shape(expected[k])} vs {what} {np.shape(found[k])}"
                for k in sorted(set(found) & set(expected))
                if np.shape(found[k]) != np.shape(expected[k])]
  if missing or unexpected or mismatched:
    raise ValueError(
        f"{what} does not match the model.\n"
        f"  missing keys (in the model, not in the {what}): {missing}\n"
        f"  unexpected keys (in the {what}, not in the model): {unexpected}\n"
        f"  shape mismatches: {mismatched}")


# ----------------------------------------------------------------- orbax directories


def write_checkpoint(directory: str, variables: Mapping[str, Any], metadata: Mapping[str, Any],
                     overwrite: bool = False) -> None:
  """Writes ``variables`` (orbax, ``VARIABLES_DIR``) and ``metadata`` (JSON,
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
    json.dump(dict(metadata), f, indent=2)


def read_checkpoint_metadata(directory: str) -> dict[str, Any]:
  """``directory/METADATA_FILE`` as a dict (its ``"format"`` key included)."""
  path = os.path.join(directory, METADATA_FILE)
  if not os.path.isfile(path):
    raise ValueError(f"directory must hold a converted checkpoint with {METADATA_FILE}, "
                     f"got {directory!r}")
  with open(path) as f:
    return json.load(f)


def restore_checkpoint(directory: str, abstract: Mapping[str, Any],
                       what: str = "checkpoint") -> dict[str, Any]:
  """Restores ``directory/VARIABLES_DIR`` as ``abstract``'s tree of ``jax.Array``.

  The stored keys and shapes must equal ``abstract``'s (:func:`check_variables`),
  checked on the stored metadata before any array is read.
  """
  path = os.path.join(os.path.abspath(directory), VARIABLES_DIR)
  checkpointer = ocp.StandardCheckpointer()
  stored = checkpointer.metadata(path).item_metadata
  check_variables(dict(getattr(stored, "tree", stored)), abstract, what=what)
  return checkpointer.restore(path, abstract)
