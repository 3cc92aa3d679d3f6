"""Configs load and validate; validation errors; multi-host start-up arguments."""
import importlib
import os

import pytest

from helpers import set_field
from train import distributed, validate_config
from train.configs import digits_c8

CONFIGS = ["cifar100_resnet50_c8", "cifar10_resnet50_c8", "cifar10_vit_c8", "digits_c8",
           "rotmnist_c8", "stl10_resnet50_c8"]
"""The image-classification configs (the default demo and the paper's experiments)."""


def test_every_config_exists():
  directory = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "train", "configs")
  assert set(CONFIGS) <= {f[:-3] for f in os.listdir(directory) if f.endswith(".py")}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_and_documents_its_command(name):
  module = importlib.import_module(f"train.configs.{name}")
  assert f"python -m train --config train/configs/{name}.py" in " ".join(
      module.__doc__.replace("\\\n", " ").split())
  assert "Expected result" in module.__doc__
  config = module.get_config()
  config.model.pretrained = None  # converted weights are not shipped
  validate_config(config, device_count=8, process_count=2)
  assert config.group == "C8" and config.variants[-1] == "canonicalized"
  if name != "digits_c8":
    assert config.canonicalizer.network == "gcnn"
    assert (config.canonicalizer.kernel_size, config.canonicalizer.features,
            config.canonicalizer.num_layers) == (5, 32, 3)
    assert config.data.image_size == 224


@pytest.mark.parametrize("field, value, devices, message", [
    ("batch_size", 36, 8, "config.batch_size must be divisible by the number of devices (8)"),
    ("eval_batch_size", 100, 8, "config.eval_batch_size must be divisible by the number"),
    ("batch_size", 0, 1, "config.batch_size must be an integer >= 1"),
    ("log_every_steps", 0, 1, "config.log_every_steps must be an integer >= 1"),
    ("model.normalize", "cifar", 1, "config.model.normalize must be"),
    ("variants", (), 1, "config.variants must be a non-empty sequence"),
    ("vanilla.augment", True, 1, "config.vanilla.augment must be False"),
    ("canonicalized.predictor_lr", -1.0, 1, "config.canonicalized.predictor_lr must be"),
    ("canonicalized.num_steps", 1.5, 1, "config.canonicalized.num_steps must be an integer"),
    ("canonicalized.prior", "uniform", 1, "config.canonicalized.prior must be one of"),
    ("canonicalized.prior_temperature", 0.0, 1, "prior_temperature must be a number > 0"),
    ("canonicalizer.type", "learned", 1, "config.canonicalizer.type must be one of"),
    ("canonicalizer.reference", "fixed", 1, "fields of canon_jax.ImageCanonicalizer"),
])
def test_validation_errors_name_the_field(field, value, devices, message):
  config = digits_c8.get_config()
  set_field(config, field, value)
  with pytest.raises(ValueError) as error:
    validate_config(config, device_count=devices)
  assert message in str(error.value)


def test_distributed_arguments_from_flags_and_environment():
  assert distributed.resolve(env={}) is None
  assert distributed.resolve("h:1", 2, 1, env={}) == {
      "coordinator_address": "h:1", "num_processes": 2, "process_id": 1}
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "WORLD_SIZE": "4", "RANK": "3"}
  assert distributed.resolve(env=env) == {
      "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
  assert distributed.resolve(env={"SLURM_NTASKS": "8"}) == {}
  assert distributed.resolve(env={"SLURM_NTASKS": "1"}) is None
  with pytest.raises(ValueError, match="number of processes"):
    distributed.resolve(env={"COORDINATOR_ADDRESS": "h:1"})
  with pytest.raises(ValueError, match="process_id must be in"):
    distributed.resolve("h:1", 2, 2, env={})
  with pytest.raises(ValueError, match="need --coordinator_address"):
    distributed.resolve(num_processes=2, env={})
