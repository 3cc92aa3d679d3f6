"""Test-wide settings: float32 everywhere, NaN debugging on, CPU only."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_debug_nans", True)
# The partitionable threefry PRNG compiles slowly on CPU (model.init of a tiny ResNet:
# 22 s vs 5 s); tests do not need its sharding-invariant streams.
jax.config.update("jax_threefry_partitionable", False)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A TFDS data_dir with canon_digits (32x32) prepared once for the whole session.

  Test modules that need another layout define their own ``data_dir`` fixture.
  """
  from canon_jax import data
  path = str(tmp_path_factory.getbasetemp() / "tfds")
  data.prepare_digits(32, data_dir=path)
  return path

