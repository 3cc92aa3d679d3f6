"""A test-sized digits_c8 config: a few steps per variant, tiny models, 32 eval digits.

Used by tests/test_train*.py, in process and through ``python -m train --config
tests/multidevice/tiny_digits.py`` (then pass ``--config.data.data_dir``).
"""
import ml_collections

from train.configs import digits_c8


def get_config() -> ml_collections.ConfigDict:
  config = digits_c8.get_config()
  config.update(batch_size=16, eval_batch_size=16, log_every_steps=1,
                checkpoint_every_steps=5, num_visualize=2, progress_bar=False)
  config.data.eval_split = "test[:32]"
  config.model.kwargs = ml_collections.ConfigDict(dict(features=(4, 8)))
  config.canonicalizer.update(network="gcnn", features=2, kernel_size=5, num_layers=2,
                              resize=16)
  for variant, steps in (("vanilla", 30), ("augmentation", 2), ("canonicalized", 12)):
    config[variant].num_steps = steps
  return config
