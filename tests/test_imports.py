"""Import-time properties: the library loads no data, checkpoint or torch stack; no cycles.

``import canon_jax`` (and ``python -m benchmarks.benchmark``) must not import TFDS, grain
or ml_collections, and ``import canon_jax`` neither orbax, pycocotools nor torch:
users who only want the canonicalizers pay neither their import time nor their
dependencies, and the benchmark runs where only the model stack and
the reference are installed (a GPU machine's image). The data API stays where it was:
``canon_jax.data.X`` and ``from canon_jax.data import X`` load its module on first use.
Each check runs in a fresh interpreter, since this test process has imported
everything already.
"""
import json
import os
import pkgutil
import random
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


HEAVY = ("orbax", "pycocotools", "torch", "segment_anything")


def test_import_canon_jax_loads_no_checkpoint_or_torch_stack():
  """Conversion (orbax, torch) and COCO evaluation (pycocotools) load on first use."""
  script = ("import sys\nimport canon_jax as cj\n"
            f"heavy = {HEAVY!r}\n"
            "assert not [m for m in heavy if m in sys.modules], sorted(sys.modules)\n"
            "assert 'load_pretrained' in dir(cj) and 'convert' in dir(cj)\n"
            "from canon_jax import load_pretrained\n"
            "assert load_pretrained is cj.convert.load_pretrained\n"
            "assert cj.coco_eval.coco_map is not None\n"
            "print('orbax' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                       text=True, cwd=Path(__file__).resolve().parents[1],
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.stdout.split()[-1] == "True"  # the lazy name did load its module


def test_public_api_is_sorted_and_resolves():
  import canon_jax
  assert canon_jax.__all__ == sorted(canon_jax.__all__)
  assert len(set(canon_jax.__all__)) == len(canon_jax.__all__)
  for name in canon_jax.__all__:
    value = getattr(canon_jax, name)
    assert callable(value) and not isinstance(value, type(canon_jax)), name
    assert name in dir(canon_jax)
  with pytest.raises(AttributeError, match="has no attribute 'load_pretrainde'"):
    canon_jax.load_pretrainde  # noqa: B018  (a typo)


def test_every_module_imports_first_in_a_fresh_interpreter():
  """No import cycle: each module of canon_jax imports, in a random order, in one fresh
  interpreter (a cycle fails whichever of its modules is imported first)."""
  import canon_jax
  names = sorted(m.name for m in pkgutil.walk_packages(canon_jax.__path__, "canon_jax."))
  assert {"canon_jax.convert", "canon_jax.checkpoint_io", "canon_jax.models.sam"} <= set(names)
  seed = random.randrange(2**32)
  random.Random(seed).shuffle(names)
  script = ("import importlib, sys\n"
            "assert not [m for m in sys.modules if m.startswith('canon_jax')]\n"
            f"for name in {names!r}:\n"
            "  importlib.import_module(name)\n")
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1],
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, f"order {names} (seed {seed}):\n{out.stderr[-3000:]}"
