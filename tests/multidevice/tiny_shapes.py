"""A test-sized shapes_pointnet_so3 config: canon_shapes/tiny, tiny PointNet and VN net.

Used by tests/test_train_points.py, in process and through ``python -m train --config
tests/multidevice/tiny_shapes.py`` (then pass ``--config.data.data_dir``).
"""
import ml_collections

from train.configs import shapes_pointnet_so3

NUM_POSES = 4


def get_config() -> ml_collections.ConfigDict:
  config = shapes_pointnet_so3.get_config()
  config.update(batch_size=8, eval_batch_size=8, log_every_steps=2,
                checkpoint_every_steps=3, progress_bar=False)
  config.data.update(name="canon_shapes/tiny", num_test_poses=NUM_POSES)
  config.model.name = "pointnet_tiny"
  # No dropout: runs on 1 and 8 devices must draw the same numbers.
  config.model.kwargs = ml_collections.ConfigDict(dict(dropout_rate=0.0))
  config.canonicalizer.update(num_neighbors=4, channels=4)
  for variant, steps in (("vanilla", 6), ("augmentation", 2), ("canonicalized", 4)):
    config[variant].num_steps = steps
  return config
