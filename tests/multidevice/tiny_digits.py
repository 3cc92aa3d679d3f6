"""A test-sized digits_c8 config: a few steps per variant, tiny models, 32 eval digits.

Used by tests/test_train*.py, in process and through ``python -m train --config
tests/multidevice/tiny_digits.py`` (then pass ``--config.data.data_dir``).
"""
import ml_collections

from train.configs import digits_c8


def get_config() -> ml_collections.ConfigDict:
  config = digits_c8.get_config()
  config.batch_size = 16
  config.eval_batch_size = 16
  config.data.eval_split = "test[:32]"
  config.model.kwargs = ml_collections.ConfigDict(dict(features=(4, 8)))
  config.canonicalizer.network = "gcnn"
  config.canonicalizer.features = 2
  config.canonicalizer.kernel_size = 5
  config.canonicalizer.num_layers = 2
  config.canonicalizer.resize = 16
  config.vanilla.num_steps = 30
  config.augmentation.num_steps = 2
  config.canonicalized.num_steps = 12
  config.log_every_steps = 1
  config.checkpoint_every_steps = 5
  config.num_visualize = 2
  config.progress_bar = False
  return config
