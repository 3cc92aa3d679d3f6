"""Test-wide settings: float32 everywhere, NaN debugging on, CPU only."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_debug_nans", True)
# The partitionable threefry PRNG compiles slowly on CPU (model.init of a tiny ResNet:
# 22 s vs 5 s); tests do not need its sharding-invariant streams.
jax.config.update("jax_threefry_partitionable", False)
