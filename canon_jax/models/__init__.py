"""Pretrained predictors as Flax Linen modules, and a registry of them by name.

``get_model("resnet50", num_classes=10)`` builds a module; ``MODELS`` maps every
name to its constructor; ``ALIASES`` maps torchvision's and timm's spellings
(``vit_b_16``, ``vit_base_patch16_224``) to those names (:func:`canonical_name`). To
add a model family, import its constructors here and add entries to ``MODELS``.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn

from canon_jax.models.common import (IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN,
                                     INCEPTION_STD, normalize, normalize_imagenet,
                                     replace_head)
from canon_jax.models.resnet import (BasicBlock, Bottleneck, ResNet, ResNet18, ResNet34,
                                     ResNet50, ResNet101, ResNetTiny)
from canon_jax.models.vit import ViT, ViTB16, ViTS16, ViTTi16, ViTTiny
from canon_jax.models.pointnet import PointNet, PointNetTiny
from canon_jax.models.dgcnn import DGCNN, DGCNNTiny
from canon_jax.models.sam import (SAM_VARIANTS, Sam, SamTiny, SamViTB, SamViTH, SamViTL,
                                  box_predictor)

MODELS: dict[str, Callable[..., nn.Module]] = {
    # Images, (B, H, W, 3) -> (B, num_classes).
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "resnet101": ResNet101,
    "resnet_tiny": ResNetTiny,  # test-sized, no pretrained weights
    "vit_b16": ViTB16,
    "vit_s16": ViTS16,
    "vit_ti16": ViTTi16,
    "vit_tiny": ViTTiny,  # test-sized (4 x 4 patches), not ViT-Ti/16 (that is "vit_ti16")
    # Point clouds, (B, N, 3) -> (B, num_classes); ModelNet40 sizes by default.
    "pointnet": PointNet,
    "pointnet_tiny": PointNetTiny,  # test-sized
    "dgcnn": DGCNN,
    "dgcnn_tiny": DGCNNTiny,  # test-sized
}
"""Model name -> constructor accepting the module's fields as keyword arguments."""

ALIASES: dict[str, str] = {
    # torchvision's spellings (torchvision.models.vit_b_16, ...).
    "vit_b_16": "vit_b16",
    "vit_s_16": "vit_s16",
    "vit_ti_16": "vit_ti16",
    # timm's names of the same architectures at 224 x 224.
    "vit_base_patch16_224": "vit_b16",
    "vit_small_patch16_224": "vit_s16",
    "vit_tiny_patch16_224": "vit_ti16",
}
"""Other libraries' names of models in ``MODELS`` -> the name in ``MODELS``."""


def canonical_name(name: str) -> str:
  """The ``MODELS`` name of ``name``, a name in ``MODELS`` or in ``ALIASES``.

  >>> canonical_name("vit_b_16"), canonical_name("resnet50")
  ('vit_b16', 'resnet50')
  """
  name = ALIASES.get(name, name)
  if name not in MODELS:
    raise ValueError(f"name must be one of {sorted(MODELS)} (or an alias in "
                     f"{sorted(ALIASES)}), got {name!r}")
  return name


def get_model(name: str, **kwargs) -> nn.Module:
  """Builds the registered model ``name`` (or an alias of it, :data:`ALIASES`) with
  field overrides, e.g. ``num_classes``.

  >>> get_model("resnet_tiny", num_classes=10).num_classes
  10
  """
  return MODELS[canonical_name(name)](**kwargs)


__all__ = [
    "ALIASES", "BasicBlock", "Bottleneck", "IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN",
    "INCEPTION_STD", "MODELS", "ResNet", "ResNet18", "ResNet34", "ResNet50", "ResNet101",
    "ResNetTiny", "ViT", "ViTB16", "ViTS16", "ViTTi16", "ViTTiny", "canonical_name",
    "get_model", "normalize",
    "normalize_imagenet", "replace_head",
    "PointNet", "PointNetTiny", "DGCNN", "DGCNNTiny",
    # Promptable segmentation (not classifiers, so not in MODELS).
    "SAM_VARIANTS", "Sam", "SamTiny", "SamViTB", "SamViTH", "SamViTL", "box_predictor",
]

# Part segmentation: (B, N, 3) -> (B, N, num_classes) per-point logits.
from canon_jax.models.segmentation_heads import (  # noqa: E402
    DGCNNSegmentation, DGCNNSegmentationTiny, PointNetSegmentation,
    PointNetSegmentationTiny)

MODELS.update({
    "pointnet_seg": PointNetSegmentation,
    "pointnet_seg_tiny": PointNetSegmentationTiny,  # test-sized
    "dgcnn_seg": DGCNNSegmentation,
    "dgcnn_seg_tiny": DGCNNSegmentationTiny,  # test-sized
})
__all__ += ["DGCNNSegmentation", "DGCNNSegmentationTiny", "PointNetSegmentation",
            "PointNetSegmentationTiny"]
