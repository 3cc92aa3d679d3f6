"""Conversion: strict key checks, orbax round trip, safetensors/.pth reading, head surgery."""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
from torch_shim import import_timm, import_torchvision, numpy_state_dict, randomize_

from canon_jax import convert
from canon_jax.models import IMAGENET_MEAN, INCEPTION_STD, get_model, replace_head

torchvision = import_torchvision()
timm = import_timm()


def _assert_trees_identical(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)

  def identical(a, b):
    assert np.asarray(a).dtype == np.asarray(b).dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  jax.tree.map(identical, actual, expected)


@pytest.fixture(scope="module")
def resnet18_state_dict():
  torch.manual_seed(0)
  return numpy_state_dict(randomize_(torchvision.models.resnet18(num_classes=10), seed=0))


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory, resnet18_state_dict):
  """A resnet18 checkpoint directory converted from a .pth file, and that file."""
  tmp = tmp_path_factory.mktemp("resnet18")
  weights = str(tmp / "resnet18.pth")
  torch.save({k: torch.from_numpy(v) for k, v in resnet18_state_dict.items()}, weights)
  out = str(tmp / "ckpt")
  convert.convert_checkpoint("resnet18", "torchvision", out, weights=weights)
  return out, weights


def test_orbax_round_trip_is_bit_identical(resnet18_checkpoint, resnet18_state_dict):
  out, weights = resnet18_checkpoint
  module, variables = convert.load_pretrained(out)
  assert module == get_model("resnet18", num_classes=10)
  direct = convert.convert_state_dict(resnet18_state_dict, module, "torchvision")
  _assert_trees_identical(variables, direct)
  # Layouts: OIHW -> HWIO, (out, in) -> (in, out), running stats -> batch_stats.
  np.testing.assert_array_equal(variables["params"]["conv1"]["kernel"],
                                resnet18_state_dict["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["params"]["head"]["kernel"],
                                resnet18_state_dict["fc.weight"].T)
  np.testing.assert_array_equal(variables["batch_stats"]["layer2_0"]["downsample_bn"]["var"],
                                resnet18_state_dict["layer2.0.downsample.1.running_var"])

  metadata = convert.read_metadata(out)
  assert (metadata.architecture, metadata.source, metadata.num_classes) == (
      "resnet18", "torchvision", 10)
  assert metadata.mean == IMAGENET_MEAN and metadata.image_size == 224
  assert metadata.origin == os.path.abspath(weights)
  with open(os.path.join(out, convert.METADATA_FILE)) as f:
    assert json.load(f)["layout"] == "NHWC"


def test_wrong_architecture_for_checkpoint_lists_differing_keys(resnet18_checkpoint):
  out, _ = resnet18_checkpoint
  with pytest.raises(ValueError) as error:
    convert.load_pretrained(out, module=get_model("resnet34", num_classes=10))
  message = str(error.value)
  assert "missing keys" in message and "params/layer1_2/conv1/kernel" in message
  assert "batch_stats/layer4_2/bn2/mean" in message

  with pytest.raises(ValueError) as error:
    convert.load_pretrained(out, module=get_model("resnet50", num_classes=10))
  message = str(error.value)
  assert "params/layer1_0/conv3/kernel" in message  # only in the model
  assert "shape mismatches" in message and "params/head/kernel: model (2048, 10) vs" in message


def test_state_dict_for_other_architecture_fails_with_both_key_sets(resnet18_state_dict):
  with pytest.raises(ValueError) as error:
    convert.convert_state_dict(resnet18_state_dict, get_model("resnet34", num_classes=10),
                               "torchvision")
  assert "params/layer3_5/bn2/scale" in str(error.value)

  broken = dict(resnet18_state_dict)
  del broken["fc.bias"]
  broken["extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(ValueError) as error:
    convert.convert_state_dict(broken, get_model("resnet18", num_classes=10), "torchvision")
  message = str(error.value)
  assert "missing keys (in the model, not in the state_dict): ['params/head/bias']" in message
  assert "unexpected keys (in the state_dict, not in the model): ['extra.weight']" in message

  with pytest.raises(ValueError, match=r"params/head/kernel: model \(512, 1000\) vs "
                                       r"state_dict \(512, 10\)"):
    convert.convert_state_dict(resnet18_state_dict, get_model("resnet18"), "torchvision")

  with pytest.raises(ValueError, match="source must be 'torchvision' for a ResNet"):
    convert.convert_state_dict(resnet18_state_dict, get_model("resnet18"), "timm")


def test_training_merge_uses_the_conversion_check():
  """train/'s merge of a pretrained predictor fails exactly as conversion does."""
  from train import trainer
  initial = {"conv": {"kernel": jax.ShapeDtypeStruct((3, 3, 1, 2), jnp.float32)},
             "head": {"bias": jax.ShapeDtypeStruct((2,), jnp.float32)}}
  loaded = {"conv": {"kernel": np.zeros((3, 3, 1, 4))}, "extra": {"w": np.zeros(1)}}
  with pytest.raises(ValueError) as error:
    trainer._strict_merge(loaded, initial, "params")  # pylint: disable=protected-access
  with pytest.raises(ValueError) as direct:
    convert.check_variables(loaded, initial, what="params")
  assert str(error.value) == str(direct.value)
  assert "missing keys (in the model, not in the params): ['head/bias']" in str(error.value)
  assert "unexpected keys (in the params, not in the model): ['extra/w']" in str(error.value)
  assert "conv/kernel: model (3, 3, 1, 2) vs params (3, 3, 1, 4)" in str(error.value)
  merged = trainer._strict_merge(  # pylint: disable=protected-access
      {"conv": {"kernel": np.ones((3, 3, 1, 2))}, "head": {"bias": np.ones(2)}}, initial, "p")
  assert merged["conv"]["kernel"].dtype == np.float32


def _timm_vit_tiny(seed: int) -> dict:
  """State dict of a timm ViT shaped like the registry's test-sized "vit_tiny" (16 x 16)."""
  torch.manual_seed(seed)
  model = timm.models.vision_transformer.VisionTransformer(
      img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
      num_classes=7)
  return numpy_state_dict(randomize_(model, seed))


def test_timm_names_are_not_torchvision_names():
  with pytest.raises(ValueError) as error:
    convert.convert_state_dict(_timm_vit_tiny(0), get_model("vit_tiny", num_classes=7),
                               "torchvision", image_size=16)
  message = str(error.value)
  assert "'blocks.0.attn.qkv.weight'" in message and "params/cls" in message


def test_cli_with_safetensors_round_trip(tmp_path, monkeypatch):
  state_dict = _timm_vit_tiny(1)
  weights = str(tmp_path / "model.safetensors")
  safetensors.numpy.save_file(state_dict, weights)

  monkeypatch.setitem(sys.modules, "torch", None)  # the safetensors path needs no torch
  read = convert.read_state_dict(weights)
  assert read.keys() == state_dict.keys()
  for name, value in state_dict.items():
    np.testing.assert_array_equal(read[name], value)

  out = str(tmp_path / "ckpt")
  args = ["--arch", "vit_tiny", "--source", "timm", "--weights", weights, "--out", out,
          "--image_size", "16"]
  convert.main(args)
  module, variables = convert.load_pretrained(out)
  assert module == get_model("vit_tiny", num_classes=7)
  _assert_trees_identical(
      variables, convert.convert_state_dict(state_dict, module, "timm", image_size=16))
  metadata = convert.read_metadata(out)
  assert metadata.std == INCEPTION_STD and metadata.image_size == 16
  with pytest.raises(ValueError, match="overwrite"):
    convert.main(args)


def test_read_state_dict_unwraps_and_validates(tmp_path):
  path = str(tmp_path / "wrapped.pt")
  torch.save({"state_dict": {"w": torch.ones(2, dtype=torch.bfloat16)}, "epoch": 3}, path)
  read = convert.read_state_dict(path)
  assert list(read) == ["w"] and read["w"].dtype == np.float32
  with pytest.raises(ValueError, match="must end in"):
    (tmp_path / "weights.npz").write_bytes(b"")
    convert.read_state_dict(str(tmp_path / "weights.npz"))
  with pytest.raises(ValueError, match="existing weights file"):
    convert.read_state_dict(str(tmp_path / "absent.pth"))


def test_download_without_network_says_what_to_do(tmp_path):
  with pytest.raises(RuntimeError, match="--weights FILE"):
    convert.download_weights("http://127.0.0.1:9/resnet50.pth", str(tmp_path), timeout_s=5)
  assert os.listdir(tmp_path) == []  # no partial file left behind
  with pytest.raises(ValueError, match="no official timm weights for arch='resnet50'"):
    convert.convert_checkpoint("resnet50", "timm", str(tmp_path / "out"))
  with pytest.raises(ValueError, match="source must be one of"):
    convert.convert_checkpoint("resnet50", "keras", str(tmp_path / "out"))


def test_replace_head_reinitialises_only_the_head(resnet18_checkpoint):
  module, variables = convert.load_pretrained(resnet18_checkpoint[0])
  new_module, new_variables = replace_head(module, variables, 3, jax.random.key(0))
  assert new_module.num_classes == 3 and module.num_classes == 10
  head = new_variables["params"]["head"]
  assert head["kernel"].shape == (512, 3) and head["bias"].shape == (3,)
  assert np.abs(head["kernel"]).max() > 0
  for name in set(variables["params"]) - {"head"}:
    assert new_variables["params"][name] is variables["params"][name]
  assert new_variables["batch_stats"] is variables["batch_stats"]
  logits = jax.eval_shape(new_module.apply, new_variables, jnp.zeros((2, 32, 32, 3)))
  assert logits.shape == (2, 3)
  with pytest.raises(ValueError, match="num_classes must be a positive int"):
    replace_head(module, variables, 0, jax.random.key(0))


def test_replace_head_of_vit_starts_from_zero_logits():
  module = get_model("vit_tiny", num_classes=10)
  shapes = convert.abstract_variables(module, 16)
  variables = jax.tree.map(lambda s: np.ones(s.shape, s.dtype), shapes)
  new_module, new_variables = replace_head(module, variables, 4, jax.random.key(0))
  assert new_module.num_classes == 4
  np.testing.assert_array_equal(new_variables["params"]["head"]["kernel"], np.zeros((32, 4)))
  np.testing.assert_array_equal(new_variables["params"]["head"]["bias"], np.zeros(4))
