"""Make ``import torchvision`` work next to a CPU-only torch (tests only).

torchvision 0.28.0 from PyPI is a CUDA build: its compiled extension ``_C.so`` does
not load next to the CPU torch wheel, so the operator schemas ``torchvision::nms``
and ``torchvision::qnms`` are never registered and importing torchvision fails with
"operator torchvision::nms does not exist" (its fake-tensor registrations need them).

:func:`import_torchvision` (and :func:`import_timm`, since timm imports torchvision)
first tries to load the extension the way torchvision
would. When that works, or the operators already exist, nothing is defined and
torchvision imports normally. Otherwise it defines the two schemas (no kernels: the
detection ops stay unusable, the classification models work) and then imports
torchvision. Keep this module in ``tests/``: the library never imports torchvision.

It also holds the small torch helpers the parity tests share (:func:`randomize_`,
:func:`numpy_state_dict`, :func:`torch_logits`, :func:`assert_logits_close`,
:func:`assert_converted_matches`).
"""
import importlib.util
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import torch

from canon_jax import convert

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_FRAGMENT = []  # keeps the Library object alive: its schemas die with it


def _has_op(name: str) -> bool:
  return hasattr(torch.ops.torchvision, name)


def _try_load_extension() -> None:
  spec = importlib.util.find_spec("torchvision")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError("torchvision is not installed; pip install torchvision")
  library = os.path.join(spec.submodule_search_locations[0], "_C.so")
  if os.path.exists(library):
    try:
      torch.ops.load_library(library)
    except OSError:
      pass


def import_torchvision() -> types.ModuleType:
  """Returns the ``torchvision`` module, defining missing operator schemas first."""
  _try_load_extension()
  missing = [s for s in _SCHEMAS if not _has_op(s.split("(", 1)[0])]
  if missing and not _FRAGMENT:
    fragment = torch.library.Library("torchvision", "FRAGMENT")
    for schema in missing:
      fragment.define(schema)
    _FRAGMENT.append(fragment)
  import torchvision

  return torchvision


def import_timm() -> types.ModuleType:
  """Returns the ``timm`` module (which imports torchvision: shimmed first)."""
  import_torchvision()
  import timm

  return timm


def randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Redraws a reference model's constant or near-zero tensors, in place; returns it.

  Default inits leave BatchNorm/LayerNorm at identity (scale 1, bias 0, running
  mean 0, variance 1), torchvision's ViT head and class token at zero and its biases
  at ~1e-6: a parity test would not see a misplaced one. Every 1-d tensor is
  redrawn (scales and variances in [0.5, 1.5], the rest N(0, 0.1^2)), as is every
  constant tensor of higher rank (N(0, 1 / fan_in)); other weights keep their init.
  """
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, tensor in model.state_dict().items():
      if not tensor.is_floating_point():
        continue
      if tensor.ndim == 1 and (name.endswith("running_var") or name.endswith("weight")):
        tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
      elif tensor.ndim == 1:
        tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
      elif bool((tensor == tensor.flatten()[0]).all()):
        fan_in = tensor[0].numel()
        tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in**0.5)
  return model.eval()


def numpy_state_dict(model: torch.nn.Module) -> dict:
  """``{name: numpy array}`` copy of ``model.state_dict()`` (torch layouts)."""
  return {name: tensor.detach().numpy().copy() for name, tensor in model.state_dict().items()}


def torch_logits(model: torch.nn.Module, images_nhwc: np.ndarray) -> np.ndarray:
  """Runs ``model`` in float32 on NHWC numpy images (transposed to NCHW)."""
  with torch.no_grad():
    x = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
    return model(x.float()).numpy()


def assert_logits_close(actual, reference, rtol: float = 1e-4) -> None:
  """``max |actual - reference| <= rtol * max |reference|`` (and equal shapes)."""
  actual, reference = np.asarray(actual), np.asarray(reference)
  assert actual.shape == reference.shape, (actual.shape, reference.shape)
  scale = np.abs(reference).max()
  assert scale > 0, "reference logits are all zero: the test would not compare anything"
  error = np.abs(actual - reference).max()
  assert error <= rtol * scale, f"max |diff| {error:.3g} > {rtol} * max |ref| {scale:.3g}"


def assert_converted_matches(reference: torch.nn.Module, module, source: str,
                             images: np.ndarray, **convert_kwargs) -> dict:
  """Converts ``reference``'s random weights into ``module`` and checks that both give
  the same float32 logits on the NHWC ``images``; returns the converted variables."""
  variables = convert.convert_state_dict(numpy_state_dict(reference), module, source,
                                         **convert_kwargs)
  with jax.default_matmul_precision("highest"):
    logits = module.apply(variables, jnp.asarray(images))
  assert logits.dtype == jnp.float32
  assert_logits_close(logits, torch_logits(reference, images))
  return variables
