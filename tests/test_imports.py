"""Import-time properties: the functional library and the benchmark load no data stack.

``import canon_jax`` (and ``python -m benchmarks.benchmark``) must not import TFDS, grain
or ml_collections: users who only want the canonicalizers pay neither their import
time nor their dependencies, and the benchmark runs where only the model stack and
the reference are installed (a GPU machine's image). The data API stays where it was:
``canon_jax.data.X`` and ``from canon_jax.data import X`` load its module on first use.
Each check runs in a fresh interpreter, since this test process has imported
everything already.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA_STACK = ("tensorflow_datasets", "grain", "ml_collections")


def _modules_after(code: str) -> dict:
  script = (code + "\nimport json, sys\n"
            f"print(json.dumps(sorted(m for m in {DATA_STACK!r} if m in sys.modules)))")
  out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                       text=True, cwd=Path(__file__).resolve().parents[1],
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("code", [
    "import canon_jax",
    "import canon_jax as cj; cj.ImageCanonicalizer; cj.models.ResNet50; cj.nn.GroupConvNet",
    "from canon_jax.models import sam",
    "import benchmarks.benchmark",
])
def test_library_and_benchmark_import_no_data_stack(code):
  assert _modules_after(code) == []


def test_data_api_loads_on_first_use():
  loaded = _modules_after(
      "import canon_jax as cj\n"
      "x, y, names = cj.data.make_shapes(num_per_class=1, num_points=8, seed=0)\n"
      "assert x.shape == (len(names), 8, 3), x.shape\n"
      "from canon_jax.data import CanonShapes, make_iterator\n"
      "import tensorflow_datasets as tfds\n"
      "assert tfds.builder_cls('canon_shapes') is CanonShapes")
  assert "tensorflow_datasets" in loaded and "grain" in loaded


def test_data_namespace_lists_and_rejects_names():
  from canon_jax import data
  assert set(data.__all__) <= set(dir(data))
  for name in data.__all__:
    assert getattr(data, name) is not None
  with pytest.raises(AttributeError, match="no attribute 'make_shape'"):
    data.make_shape  # noqa: B018  (a typo of make_shapes)
