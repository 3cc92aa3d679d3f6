"""ResNet 18/34/50/101 as Flax Linen modules, the same functions as torchvision's.

Layout and conventions (identical maths to ``torchvision.models.resnet*``, v1.5):

* input ``(B, H, W, 3)`` float32 NHWC, normalised with
  :func:`~canon_jax.models.normalize_imagenet` for the torchvision ImageNet weights
  (pixels in ``[0, 1]``, then ``(x - IMAGENET_MEAN) / IMAGENET_STD``); output logits
  ``(B, num_classes)``. Any ``H, W >= 32`` works (global average pooling); the
  ImageNet weights were trained at 224 x 224.
* every convolution uses explicit symmetric padding ``k // 2`` as torch does (Flax
  ``'SAME'`` pads strided convolutions asymmetrically and would shift the features);
  the stem max-pool is 3 x 3, stride 2, padding 1 with ``-inf`` padding.
* :class:`Bottleneck` strides on its 3 x 3 convolution (torchvision's "v1.5").
* BatchNorm: ``epsilon=1e-5``, ``momentum=0.9`` (Flax's decay of the running
  average; torch's ``momentum=0.1``). ``train=False`` normalises with the running
  statistics in ``variables['batch_stats']``; ``train=True`` normalises with the
  batch statistics and must be applied with ``mutable=['batch_stats']``. The running
  variance is updated with the biased batch variance (torch uses the unbiased one).
* parameter names follow torchvision's modules (``conv1``, ``bn1``, ``layer{i}_{j}``
  with ``conv*``/``bn*``/``downsample_conv``/``downsample_bn``), except the final
  classifier, named ``head`` in every model of this package; kernels are HWIO.

>>> import jax, jax.numpy as jnp
>>> model = ResNetTiny(num_classes=10)
>>> shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
>>> shapes["params"]["layer2_0"]["downsample_conv"]["kernel"].shape  # HWIO
(1, 1, 8, 16)
>>> shapes["batch_stats"]["bn1"]["var"].shape, shapes["params"]["head"]["kernel"].shape
((8,), (64, 10))
"""
from __future__ import annotations

import functools
from typing import Any, Callable, ClassVar, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from canon_jax import state_dict_rules as rules
from canon_jax._checks import check_nhwc
from canon_jax.nn.conv import pointwise

Initializer = Callable[..., jax.Array]

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class PointwiseConv(nn.Module):
  """Bias-free 1 x 1 convolution with stride s: ``(B, H, W, C) -> (B, ceil(H/s),
  ceil(W/s), features)``, the same function and the same ``kernel`` parameter (HWIO,
  ``(1, 1, C, features)``) as ``nn.Conv(features, (1, 1), strides=s,
  padding=0, use_bias=False)``, computed as one matmul of the strided map
  (:func:`canon_jax.nn.pointwise`): XLA then differentiates a matmul, which on some
  backends is far cheaper than the convolution's gradient (on a 2-core CPU the
  ResNet50 train step took 399 instead of 682 ms; benchmarks/BENCHMARKS.md).

  Attributes:
    features: output channels.
    strides: stride s of both spatial axes.
    dtype: computation dtype (the kernel parameter stays float32).
  """
  features: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", _CONV_INIT, (1, 1, x.shape[-1], self.features))
    s = self.strides
    return pointwise(x[:, ::s, ::s].astype(self.dtype), kernel[0, 0].astype(self.dtype))


def _conv(features: int, kernel: int, strides: int, name: str, dtype: Any) -> nn.Module:
  """Bias-free k x k convolution, stride s, torch's symmetric padding ``k // 2``
  (Flax's "SAME" pads strided convolutions asymmetrically), torchvision's
  initialiser; 1 x 1 convolutions as :class:`PointwiseConv`."""
  if kernel == 1:
    return PointwiseConv(features, strides, dtype, name=name)
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 kernel_init=_CONV_INIT, dtype=dtype, name=name)


def _batch_norm(train: bool, name: str, dtype: Any) -> nn.BatchNorm:
  return nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name)


def _shortcut(x: jax.Array, features: int, strides: int, train: bool, dtype: Any) -> jax.Array:
  """Identity, or 1 x 1 strided conv + BatchNorm when the shape changes."""
  if strides == 1 and x.shape[-1] == features:
    return x
  x = _conv(features, 1, strides, "downsample_conv", dtype)(x)
  return _batch_norm(train, "downsample_bn", dtype)(x)


class _ResidualBlock(nn.Module):
  """A residual block: the convolutions :meth:`convs` = ((features, kernel, stride),
  ...), named ``conv1``, ``conv2``, ..., each followed by BatchNorm ``bn1``, ``bn2``,
  ... and a ReLU but the last; then the sum with the shortcut (the block's stride,
  its last convolution's features) and a ReLU.

  Attributes:
    features: see the subclass.
    strides: stride ``s`` of the strided convolution and of the shortcut.
    dtype: computation dtype (parameters stay float32).
  """
  features: int
  strides: int = 1
  dtype: Any = jnp.float32
  expansion: ClassVar[int] = 1

  def convs(self) -> tuple[tuple[int, int, int], ...]:
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    convs = self.convs()
    y = x
    for i, (features, kernel, stride) in enumerate(convs, start=1):
      y = _conv(features, kernel, stride, f"conv{i}", self.dtype)(y)
      y = _batch_norm(train, f"bn{i}", self.dtype)(y)
      if i < len(convs):
        y = nn.relu(y)
    shortcut = _shortcut(x, convs[-1][0], self.strides, train, self.dtype)
    return nn.relu(y + shortcut)


class BasicBlock(_ResidualBlock):
  """Two 3 x 3 convolutions (ResNet-18/34): ``(B, H, W, C) -> (B, H/s, W/s, features)``,
  the first one strided."""

  def convs(self) -> tuple[tuple[int, int, int], ...]:
    return (self.features, 3, self.strides), (self.features, 3, 1)


class Bottleneck(_ResidualBlock):
  """1 x 1 -> 3 x 3 (strided) -> 1 x 1 block (ResNet-50/101), 4x channel expansion:
  ``(B, H, W, C) -> (B, H/s, W/s, 4 * features)``; ``features`` are the inner 3 x 3
  convolution's channels."""
  expansion: ClassVar[int] = 4

  def convs(self) -> tuple[tuple[int, int, int], ...]:
    f = self.features
    return (f, 1, 1), (f, 3, self.strides), (f * self.expansion, 1, 1)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
  """ResNet classifier: ``(B, H, W, 3)`` NHWC images -> ``(B, num_classes)`` logits.

  Stem: 7 x 7 stride-2 conv (padding 3), BatchNorm, ReLU, 3 x 3 stride-2 max-pool
  (padding 1). Then ``len(stage_sizes)`` stages of ``stage_sizes[i]`` blocks with
  ``width * 2**i`` channels (stride 2 at the first block of every stage but the
  first), global average pooling and the ``head`` Dense layer.

  Attributes:
    stage_sizes: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
    block: ``"basic"`` (:class:`BasicBlock`) or ``"bottleneck"`` (:class:`Bottleneck`).
    num_classes: number of logits.
    width: channels of the stem and of the first stage (64 in torchvision).
    dtype: computation dtype, e.g. ``jnp.bfloat16`` on accelerators; parameters and
      batch statistics stay float32, logits are returned as float32.
  """
  stage_sizes: Sequence[int]
  block: Literal["basic", "bottleneck"] = "bottleneck"
  num_classes: int = 1000
  width: int = 64
  dtype: Any = jnp.float32
  head_kernel_init: ClassVar[Initializer] = staticmethod(nn.initializers.variance_scaling(
      1.0 / 3.0, "fan_in", "uniform"))  # torch.nn.Linear's default
  head_bias_init: ClassVar[Initializer] = staticmethod(nn.initializers.zeros)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits ``(B, num_classes)`` float32 for images ``x`` of shape ``(B, H, W, 3)``.

    ``train`` selects batch statistics (and their update in ``batch_stats``, apply
    with ``mutable=['batch_stats']``) over the running averages.
    """
    check_nhwc(x, "images")
    if self.block not in _BLOCKS:
      raise ValueError(f"block must be one of {sorted(_BLOCKS)}, got {self.block!r}")
    block_cls = _BLOCKS[self.block]
    x = _conv(self.width, 7, 2, "conv1", self.dtype)(x)
    x = nn.relu(_batch_norm(train, "bn1", self.dtype)(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = block_cls(self.width * 2**i, strides, self.dtype, name=f"layer{i + 1}_{j}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, kernel_init=self.head_kernel_init,
                 bias_init=self.head_bias_init, dtype=self.dtype, name="head")(x)
    return x.astype(jnp.float32)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block="basic")
"""torchvision ``resnet18``: BasicBlock, stages (2, 2, 2, 2), 11.7 M parameters."""
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="basic")
"""torchvision ``resnet34``: BasicBlock, stages (3, 4, 6, 3), 21.8 M parameters."""
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="bottleneck")
"""torchvision ``resnet50``: Bottleneck, stages (3, 4, 6, 3), 25.6 M parameters."""
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block="bottleneck")
"""torchvision ``resnet101``: Bottleneck, stages (3, 4, 23, 3), 44.5 M parameters."""
ResNetTiny = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), block="basic", width=8)
"""Test-sized ResNet: one BasicBlock per stage, widths 8/16/32/64 (~50 k parameters)."""


def torch_rules(source: str) -> tuple[rules.Rule, ...]:
  """Renaming rules of ``source``'s ResNet state dicts (:mod:`canon_jax.state_dict_rules`).

  Args:
    source: ``"torchvision"`` (``torchvision.models.resnet*`` names).
  """
  if source != "torchvision":
    raise ValueError(f"source must be 'torchvision' for a ResNet, got {source!r}")
  conv, bn = rules.CONV_LEAVES, rules.BATCHNORM_LEAVES
  block = r"layer(\d+)\.(\d+)"
  return (
      (r"conv1", "conv1", conv),
      (r"bn1", "bn1", bn),
      (block + r"\.conv(\d+)", r"layer\1_\2/conv\3", conv),
      (block + r"\.bn(\d+)", r"layer\1_\2/bn\3", bn),
      (block + r"\.downsample\.0", r"layer\1_\2/downsample_conv", conv),
      (block + r"\.downsample\.1", r"layer\1_\2/downsample_bn", bn),
      (r"fc", "head", rules.DENSE_LEAVES),
  )
