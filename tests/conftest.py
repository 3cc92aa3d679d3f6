"""Test-wide settings: float32 everywhere, NaN debugging on, CPU only.

No persistent compilation cache: the end-to-end tests compare resumed runs with
uninterrupted ones to 1e-6, and runs that loaded cached CPU executables drifted from
freshly compiled ones in the 7th digit.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_debug_nans", True)
# JAX's default (partitionable) threefry PRNG compiles slowly on CPU. Measured with jax
# 0.10.2 on a 2-core CPU, each in a fresh process: jax.jit(model.init)(jax.random.key(0),
# np.zeros((1, 32, 32, 3), np.float32)) for models.get_model("resnet_tiny",
# num_classes=10) took 16.6 s and 25.0 s with the default, 5.0 s and 6.1 s with
# partitionable=False (two runs each). The tests compare values within one setting and
# never rely on sharding-invariant random streams, so they use the faster one.
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
