"""Test-wide settings: float32 everywhere, NaN debugging on, CPU only."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_debug_nans", True)
