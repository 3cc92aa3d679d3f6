"""ViT: parity with torchvision vit_b_16 and timm ViTs (random weights), dropout, checks."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import assert_bfloat16_close_to_float32
from torch_shim import (assert_converted_matches, assert_logits_close, import_timm,
                        import_torchvision, numpy_state_dict, randomize_, torch_logits)

from canon_jax import convert
from canon_jax.models import ViT, get_model

torchvision = import_torchvision()
timm = import_timm()

# A small ViT both libraries can build: 32 x 32 images, 8 x 8 patches, 4 heads.
SMALL = dict(patch_size=8, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, num_classes=5)


def _images(seed: int, shape) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _small_reference(library: str, seed: int = 0) -> torch.nn.Module:
  """The SMALL ViT in ``library`` ("torchvision" or "timm"), random weights."""
  torch.manual_seed(seed)
  if library == "torchvision":
    model = torchvision.models.vision_transformer.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
        num_classes=5)
  else:
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0,
        num_classes=5)
  return randomize_(model, seed)


@pytest.fixture(scope="module")
def small():
  """torchvision small ViT, its Flax twin, converted variables and a jitted apply."""
  reference = _small_reference("torchvision")
  module = ViT(**SMALL)
  variables = convert.convert_state_dict(
      numpy_state_dict(reference), module, "torchvision", image_size=32)
  apply = jax.jit(module.apply, static_argnames="train")
  return reference, module, variables, apply


def _check_parity(reference, module, source, image_size, batch, seed):
  assert_converted_matches(reference, module, source,
                           _images(seed, (batch, image_size, image_size, 3)),
                           image_size=image_size)


def test_vit_b_16_matches_torchvision_at_224():
  torch.manual_seed(0)
  reference = randomize_(torchvision.models.vit_b_16(), seed=0)
  _check_parity(reference, get_model("vit_b16"), "torchvision", 224, batch=2, seed=1)


def test_vit_tiny_patch16_224_matches_timm():
  torch.manual_seed(0)
  reference = randomize_(timm.create_model("vit_tiny_patch16_224", pretrained=False), seed=0)
  _check_parity(reference, get_model("vit_ti16"), "timm", 224, batch=2, seed=2)


def test_small_vit_matches_timm():
  _check_parity(_small_reference("timm", seed=3), ViT(**SMALL), "timm", 32, batch=3, seed=3)


def test_small_vit_matches_torchvision(small):
  reference, _, variables, apply = small
  images = _images(4, (3, 32, 32, 3))
  with jax.default_matmul_precision("highest"):
    assert_logits_close(apply(variables, jnp.asarray(images)), torch_logits(reference, images))


def test_torchvision_and_timm_names_convert_to_the_same_variables(small):
  # Copy the torchvision weights into a timm model: both conversions must agree exactly.
  reference, module, variables, _ = small
  timm_model = _small_reference("timm")
  tv = reference.state_dict()
  block = "encoder.layers.encoder_layer_{}."
  with torch.no_grad():
    timm_model.cls_token.copy_(tv["class_token"])
    timm_model.pos_embed.copy_(tv["encoder.pos_embedding"])
    timm_model.patch_embed.proj.weight.copy_(tv["conv_proj.weight"])
    timm_model.patch_embed.proj.bias.copy_(tv["conv_proj.bias"])
    for i, b in enumerate(timm_model.blocks):
      prefix = block.format(i)
      for dst, src in [(b.norm1, "ln_1"), (b.norm2, "ln_2"), (b.mlp.fc1, "mlp.0"),
                       (b.mlp.fc2, "mlp.3"), (b.attn.proj, "self_attention.out_proj")]:
        dst.weight.copy_(tv[prefix + src + ".weight"])
        dst.bias.copy_(tv[prefix + src + ".bias"])
      b.attn.qkv.weight.copy_(tv[prefix + "self_attention.in_proj_weight"])
      b.attn.qkv.bias.copy_(tv[prefix + "self_attention.in_proj_bias"])
    for dst, src in [(timm_model.norm, "encoder.ln"), (timm_model.head, "heads.head")]:
      dst.weight.copy_(tv[src + ".weight"])
      dst.bias.copy_(tv[src + ".bias"])
  from_timm = convert.convert_state_dict(numpy_state_dict(timm_model), module, "timm", 32)
  jax.tree.map(np.testing.assert_array_equal, from_timm, variables)


def test_legacy_torchvision_mlp_names(small):
  # Checkpoints saved before torchvision 0.14 call the MLP layers linear_1 / linear_2.
  reference, module, variables, _ = small
  legacy = {k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v
            for k, v in numpy_state_dict(reference).items()}
  assert any("linear_1" in k for k in legacy)
  converted = convert.convert_state_dict(legacy, module, "torchvision", image_size=32)
  jax.tree.map(np.testing.assert_array_equal, converted, variables)


def test_qkv_split_is_head_major(small):
  reference, _, variables, _ = small
  in_proj = reference.encoder.layers[0].self_attention.in_proj_weight.detach().numpy()
  attention = variables["params"]["encoderblock_0"]["attention"]
  np.testing.assert_array_equal(attention["query"]["kernel"], in_proj[:32].T)
  np.testing.assert_array_equal(attention["key"]["kernel"], in_proj[32:64].T)
  np.testing.assert_array_equal(attention["value"]["kernel"], in_proj[64:].T)


def test_dropout_only_in_training(small):
  _, module, variables, apply = small
  images = jnp.asarray(_images(5, (2, 32, 32, 3)))
  dropped = jax.jit(module.clone(dropout_rate=0.5).apply, static_argnames="train")
  np.testing.assert_array_equal(dropped(variables, images), apply(variables, images))
  train = dropped(variables, images, train=True, rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(train, apply(variables, images))
  with pytest.raises(flax.errors.InvalidRngError):
    dropped(variables, images, train=True)


def test_bfloat16_compute_stays_close_to_float32(small):
  _, module, variables, apply = small
  images = jnp.asarray(_images(6, (2, 32, 32, 3)))
  assert_bfloat16_close_to_float32(module, variables, images, apply)


def test_image_size_checks(small):
  _, module, variables, apply = small
  with pytest.raises(ValueError, match="multiples of patch_size=8"):
    apply(variables, jnp.zeros((1, 36, 36, 3)))
  with pytest.raises(flax.errors.ScopeParamShapeError, match="pos_embedding"):
    apply(variables, jnp.zeros((1, 40, 40, 3)))  # position embedding is for 32 x 32
  with pytest.raises(ValueError, match="NHWC"):
    apply(variables, jnp.zeros((1, 3, 32, 32)))


def test_registry_sizes():
  expected = {"vit_b16": 86_567_656, "vit_s16": 22_050_664, "vit_ti16": 5_717_416}
  for name, count in expected.items():
    shapes = convert.abstract_variables(get_model(name), 224)
    assert sum(x.size for x in jax.tree.leaves(shapes)) == count, name
  tiny = convert.abstract_variables(get_model("vit_tiny", num_classes=3), 16)
  assert tiny["params"]["pos_embedding"].shape == (1, 17, 32)
