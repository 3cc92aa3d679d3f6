"""ResNet: parity with torchvision (random weights), BatchNorm modes, input checks."""
import copy

import flax.linen as nn

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import assert_bfloat16_close_to_float32
from torch_shim import (assert_converted_matches, assert_logits_close,
                        import_torchvision, numpy_state_dict, randomize_, torch_logits)

from canon_jax import convert
from canon_jax.models import (IMAGENET_MEAN, IMAGENET_STD, ResNet, get_model, normalize,
                              normalize_imagenet)
from canon_jax.models.resnet import PointwiseConv

torchvision = import_torchvision()


def _images(seed: int, shape) -> np.ndarray:
  """Random ImageNet-normalised NHWC float32 images."""
  pixels = np.random.default_rng(seed).random(shape, dtype=np.float32)
  return np.asarray(normalize_imagenet(pixels))


@pytest.fixture(scope="module")
def small():
  """torchvision ResNet with one BasicBlock per stage, its Flax twin, variables, jitted apply."""
  torch.manual_seed(0)
  reference = torchvision.models.resnet.ResNet(
      torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=5)
  randomize_(reference, seed=0)
  module = ResNet(stage_sizes=(1, 1, 1, 1), block="basic", num_classes=5)
  variables = convert.convert_state_dict(numpy_state_dict(reference), module, "torchvision")
  apply = jax.jit(module.apply, static_argnames=("train", "mutable"))
  return reference, module, variables, apply


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_eval_logits_match_torchvision(arch):
  torch.manual_seed(1)
  reference = randomize_(getattr(torchvision.models, arch)(num_classes=10), seed=1)
  # Two different random images.
  assert_converted_matches(reference, get_model(arch, num_classes=10), "torchvision",
                           _images(2, (2, 64, 64, 3)))


@pytest.mark.parametrize("height,width", [(33, 46), (50, 38)])
def test_non_square_sizes_match_torchvision(small, height, width):
  # Feature maps alternate between odd and even sizes across the strided layers; Flax
  # 'SAME' would pad the even ones asymmetrically (0, 1) where torch pads (1, 1).
  reference, _, variables, apply = small
  images = _images(3, (2, height, width, 3))
  with jax.default_matmul_precision("highest"):
    logits = apply(variables, jnp.asarray(images))
  assert_logits_close(logits, torch_logits(reference, images))


def test_train_mode_uses_batch_statistics_and_momentum_0_1(small):
  reference, _, variables, apply = small
  reference = copy.deepcopy(reference).train()
  images = _images(4, (4, 32, 32, 3))  # >= 4 samples per channel in the last stage
  old_mean = np.asarray(variables["batch_stats"]["bn1"]["mean"])
  old_var = np.asarray(variables["batch_stats"]["bn1"]["var"])
  with jax.default_matmul_precision("highest"):
    logits, updates = apply(variables, jnp.asarray(images), train=True,
                            mutable=("batch_stats",))
  expected = torch_logits(reference, images)  # also updates the running statistics
  assert_logits_close(logits, expected)

  new = updates["batch_stats"]["bn1"]
  np.testing.assert_allclose(new["mean"], reference.bn1.running_mean.numpy(), rtol=1e-5,
                             atol=1e-6)
  # torch averages the unbiased batch variance, Flax the biased one (n = B * H * W).
  n = 4 * 16 * 16
  torch_batch_var = (reference.bn1.running_var.numpy() - 0.9 * old_var) / 0.1
  np.testing.assert_allclose(new["var"], 0.9 * old_var + 0.1 * torch_batch_var * (n - 1) / n,
                             rtol=1e-5)
  assert not np.allclose(new["mean"], old_mean)


def test_eval_mode_leaves_batch_stats_alone_and_is_batch_independent(small):
  _, _, variables, apply = small
  images = jnp.asarray(_images(5, (2, 32, 32, 3)))
  other = images.at[1].set(2.0 * images[1] + 1.0)
  first, updates = apply(variables, images, mutable=("batch_stats",))
  np.testing.assert_array_equal(first[0], apply(variables, other)[0])
  jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"], variables["batch_stats"])


def test_bfloat16_compute_stays_close_to_float32(small):
  _, module, variables, apply = small
  images = jnp.asarray(_images(6, (2, 32, 32, 3)))
  assert_bfloat16_close_to_float32(module, variables, images, apply)


def test_tiny_variant_and_registry():
  shapes = convert.abstract_variables(get_model("resnet_tiny", num_classes=3), 32)
  assert shapes["params"]["conv1"]["kernel"].shape == (7, 7, 3, 8)
  assert shapes["params"]["head"]["kernel"].shape == (64, 3)
  resnet50 = convert.abstract_variables(get_model("resnet50"), 64)
  count = sum(x.size for x in jax.tree.leaves(resnet50["params"]))
  assert count == 25_557_032  # torchvision's resnet50 parameter count
  with pytest.raises(ValueError, match="resnet_tiny"):
    get_model("resnet_huge")


def test_rejects_nchw_and_integer_images(small):
  _, module, variables, _ = small
  with pytest.raises(ValueError, match="NHWC"):
    module.apply(variables, jnp.zeros((2, 3, 32, 32)))
  with pytest.raises(TypeError, match="floating"):
    module.apply(variables, jnp.zeros((2, 32, 32, 3), jnp.uint8))


def test_normalize_imagenet():
  mean = np.asarray(IMAGENET_MEAN, np.float32)
  std = np.asarray(IMAGENET_STD, np.float32)
  pixels = np.stack([mean, mean + std])[None]  # (1, 2, 3)
  np.testing.assert_allclose(normalize_imagenet(pixels), [[[0, 0, 0], [1, 1, 1]]], atol=1e-6)
  np.testing.assert_allclose(normalize(pixels, (0.5,) * 3, (0.5,) * 3), 2 * pixels - 1,
                             atol=1e-6)
  with pytest.raises(ValueError, match="3 channels"):
    normalize_imagenet(np.zeros((2, 3, 8, 8), np.float32))
  with pytest.raises(TypeError, match="floating"):
    normalize_imagenet(np.zeros((2, 8, 8, 3), np.uint8))


@pytest.mark.parametrize("strides,size", [(1, 6), (2, 7), (2, 8)])
def test_pointwise_conv_equals_flax_conv_and_its_gradients(strides, size):
  """PointwiseConv is nn.Conv's 1 x 1 convolution (odd and even sides, stride 1 and
  2): the same parameter, outputs and gradients."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, size, size, 3)), jnp.float32)
  ours = PointwiseConv(5, strides)
  flax_conv = nn.Conv(5, (1, 1), strides=(strides, strides), padding=0, use_bias=False)
  variables = ours.init(jax.random.key(0), x)
  assert variables["params"]["kernel"].shape == (1, 1, 3, 5)

  def loss(module, v, x):
    return jnp.sum(jnp.sin(module.apply(v, x)))

  np.testing.assert_allclose(ours.apply(variables, x), flax_conv.apply(variables, x),
                             rtol=1e-5, atol=1e-5)
  grads = jax.grad(loss, argnums=(1, 2))
  ours_grads, flax_grads = grads(ours, variables, x), grads(flax_conv, variables, x)
  for a, b in zip(jax.tree_util.tree_leaves(ours_grads), jax.tree_util.tree_leaves(flax_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
