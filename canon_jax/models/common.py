"""Input normalisation and classification-head surgery shared by the image models.

Conventions for every image model in :mod:`canon_jax.models`:

* images are ``float32`` arrays of shape ``(batch, height, width, 3)`` (NHWC), RGB;
* pixel values are first scaled to ``[0, 1]`` (``uint8 / 255``), then normalised per
  channel with the statistics the weights were trained with:
  ``(images - mean) / std``. torchvision ResNets and ViT-B/16 use the ImageNet
  statistics :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`; timm's augreg ViTs use
  :data:`INCEPTION_MEAN` / :data:`INCEPTION_STD` (``[-1, 1]`` inputs). A converted
  checkpoint records the right pair in its metadata
  (:func:`canon_jax.convert.read_metadata`).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel RGB mean of ImageNet for images scaled to [0, 1]."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel RGB standard deviation of ImageNet for images scaled to [0, 1]."""
INCEPTION_MEAN = (0.5, 0.5, 0.5)
"""Mean used by timm's augreg ViT weights: maps [0, 1] to [-1, 1] with INCEPTION_STD."""
INCEPTION_STD = (0.5, 0.5, 0.5)
"""Standard deviation used by timm's augreg ViT weights."""


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """Returns ``(images - mean) / std`` over the last (channel) axis.

  Args:
    images: ``(..., C)`` float array, values in ``[0, 1]``, channels last.
    mean: ``C`` per-channel means.
    std: ``C`` per-channel standard deviations (positive).

  Returns:
    Array of the shape and dtype of ``images``.
  """
  images = jnp.asarray(images)
  if len(mean) != len(std):
    raise ValueError(f"mean and std must have equal length, got {len(mean)} and {len(std)}")
  if images.ndim == 0 or images.shape[-1] != len(mean):
    raise ValueError(
        f"images must have {len(mean)} channels on the last axis (NHWC), got shape {images.shape}")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise TypeError(f"images must be floating point scaled to [0, 1], got dtype {images.dtype}")
  mean = jnp.asarray(mean, images.dtype)
  std = jnp.asarray(std, images.dtype)
  return (images - mean) / std


def normalize_imagenet(images: jax.Array) -> jax.Array:
  """ImageNet normalisation expected by the torchvision ResNet and ViT-B/16 weights.

  Args:
    images: ``(..., 3)`` float RGB array, channels last, values in ``[0, 1]``.

  Returns:
    ``(images - IMAGENET_MEAN) / IMAGENET_STD``, same shape and dtype.

  >>> import jax.numpy as jnp
  >>> normalize_imagenet(jnp.asarray(IMAGENET_MEAN)[None]).tolist()
  [[0.0, 0.0, 0.0]]
  """
  return normalize(images, IMAGENET_MEAN, IMAGENET_STD)


def _head_dense(module: nn.Module, num_classes: int) -> nn.Dense:
  return nn.Dense(
      num_classes, kernel_init=module.head_kernel_init, bias_init=module.head_bias_init)


def replace_head(module: nn.Module, variables: dict[str, Any], num_classes: int,
                 rng: jax.Array) -> tuple[nn.Module, dict[str, Any]]:
  """Re-initialises only the classification head for ``num_classes`` outputs.

  The model's head is the ``nn.Dense`` named ``"head"`` with kernel
  ``(features, num_classes)``; it is drawn afresh with the model's own head
  initialisers (``module.head_kernel_init`` / ``module.head_bias_init``). Every other
  variable is returned unchanged (same array objects).

  Args:
    module: a model with a ``num_classes`` field and ``head_*_init`` class attributes
      (:class:`~canon_jax.models.ResNet`, :class:`~canon_jax.models.ViT`).
    variables: ``{'params': {..., 'head': {'kernel', 'bias'}}, ...}`` of ``module``.
    num_classes: new number of outputs, positive.
    rng: PRNG key for the new head.

  Returns:
    ``(module.clone(num_classes=num_classes), new_variables)``.
  """
  if not isinstance(num_classes, int) or num_classes <= 0:
    raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
  if not hasattr(module, "num_classes") or not hasattr(module, "head_kernel_init"):
    raise TypeError(f"module must be a classifier with a 'head' Dense, got {type(module).__name__}")
  params = variables.get("params", {})
  if "head" not in params or "kernel" not in params["head"]:
    raise ValueError(
        f"variables['params'] must contain 'head'/'kernel', got keys {sorted(params)}")
  in_features = params["head"]["kernel"].shape[0]
  kernel_dtype = params["head"]["kernel"].dtype
  head = _head_dense(module, num_classes).init(rng, jnp.zeros((1, in_features), kernel_dtype))
  new_params = {**params, "head": head["params"]}
  return module.clone(num_classes=num_classes), {**variables, "params": new_params}
