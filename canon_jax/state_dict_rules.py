"""Renaming rules from torch state dicts to flat Flax variables (pure numpy).

A rule is ``(torch module regex, Flax module template, {leaf name: converter})``; a
torch entry ``"<module>.<leaf>"`` is converted by the first rule whose regex fully
matches ``<module>`` and that knows ``<leaf>``. A converter maps one torch array to
``[(collection, path inside the Flax module, array)]``, re-laid out: conv kernels
OIHW -> HWIO, Linear ``(out, in)`` -> ``(in, out)``, BatchNorm ``running_*`` ->
``batch_stats``, a fused ``[q; k; v]`` projection split in three. Each model file
states its own rules (``canon_jax.models.resnet.torch_rules`` ...) with the leaf
converters below; :func:`torch_to_flax` applies them.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

LeafConverter = Callable[[np.ndarray], list[tuple[str, tuple[str, ...], np.ndarray]]]
"""One torch array -> ``[(collection, path inside the Flax module, array)]``."""

Rule = tuple[str, str, Mapping[str, LeafConverter]]
"""``(torch module regex, Flax module path template, {torch leaf: converter})``."""


def oihw_to_hwio(kernel: np.ndarray) -> np.ndarray:
  """A torch conv weight ``(O, I, H, W)`` as a Flax kernel ``(H, W, I, O)``."""
  if kernel.ndim != 4:
    raise ValueError(f"conv weight must be 4-d (O, I, H, W), got shape {kernel.shape}")
  return np.transpose(kernel, (2, 3, 1, 0))


def out_in_to_in_out(kernel: np.ndarray) -> np.ndarray:
  """A torch Linear weight ``(out, in)`` as a Flax Dense kernel ``(in, out)``."""
  if kernel.ndim != 2:
    raise ValueError(f"linear weight must be 2-d (out, in), got shape {kernel.shape}")
  return np.transpose(kernel)


def leaf_to(collection: str, name: str,
            layout: Callable[[np.ndarray], np.ndarray] = np.asarray) -> LeafConverter:
  """A torch leaf -> the Flax leaf ``collection/<module>/name``, re-laid out by ``layout``.

  ``name=""`` names the leaf by the rule's template alone (e.g. an ``nn.Embed``-like
  parameter that is the Flax module's only variable).
  """
  return lambda value: [(collection, (name,), layout(value))]


def drop(value: np.ndarray) -> list:
  """A torch leaf with no Flax counterpart (BatchNorm's ``num_batches_tracked``)."""
  del value
  return []


def split_qkv(name: str, layout: Callable[[np.ndarray], np.ndarray] = np.asarray
              ) -> LeafConverter:
  """Fused ``[q; k; v]`` rows ``(3 D, ...)`` -> ``query``/``key``/``value`` leaves ``name``."""

  def convert(value):
    if value.shape[0] % 3:
      raise ValueError(f"fused qkv must have 3 * D rows, got shape {value.shape}")
    return [("params", (part, name), layout(x))
            for part, x in zip(("query", "key", "value"), np.split(value, 3, axis=0))]

  return convert


CONV_LEAVES = {"weight": leaf_to("params", "kernel", oihw_to_hwio),
               "bias": leaf_to("params", "bias")}
"""``nn.Conv2d`` -> ``nn.Conv``."""
DENSE_LEAVES = {"weight": leaf_to("params", "kernel", out_in_to_in_out),
                "bias": leaf_to("params", "bias")}
"""``nn.Linear`` -> ``nn.Dense``."""
BATCHNORM_LEAVES = {
    "weight": leaf_to("params", "scale"),
    "bias": leaf_to("params", "bias"),
    "running_mean": leaf_to("batch_stats", "mean"),
    "running_var": leaf_to("batch_stats", "var"),
    "num_batches_tracked": drop,
}
"""``nn.BatchNorm2d`` -> ``nn.BatchNorm``."""
LAYERNORM_LEAVES = {"weight": leaf_to("params", "scale"), "bias": leaf_to("params", "bias")}
"""``nn.LayerNorm`` -> ``nn.LayerNorm``."""


def torch_to_flax(state_dict: Mapping[str, Any], rules: Sequence[Rule]
                  ) -> tuple[dict[str, np.ndarray], list[str]]:
  """Renames and re-lays-out a torch state dict into flat Flax variables.

  Args:
    state_dict: ``{torch name: array}`` in torch layouts.
    rules: ``(module regex, Flax module template, {leaf: converter})`` triples.

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
