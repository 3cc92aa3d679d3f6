"""grain pipeline: per-host sharding, exact resume, eval padding; TFDS loading."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds

from canon_jax import data

N = 37  # examples in the toy dataset: not a multiple of any batch size used


def _toy(n=N, size=4):
  """Examples whose image and 'index' key identify them."""
  return [{"image": np.full((size, size, 1), i / 100.0, np.float32),
           "label": np.int32(i % 10), "index": np.int32(i)} for i in range(n)]


def _noise(image, rng):
  return image + rng.uniform(0.0, 1.0, size=(1, 1, 1)).astype(np.float32)


def _batches(it, k):
  return [next(it) for _ in range(k)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.mark.parametrize("num_epochs,drop_remainder", [(3, True), (2, False)])
@pytest.mark.parametrize("process_count", [2, 4])
def test_process_shares_concatenate_to_the_global_batch(
    process_count, num_epochs, drop_remainder):
  kwargs = dict(batch_size=8, shuffle=True, seed=3, num_epochs=num_epochs,
                drop_remainder=drop_remainder, augment=_noise)
  single = data.make_batch_dataset(_toy(), **kwargs)
  shares = [data.make_batch_dataset(_toy(), process_index=p,
                                    process_count=process_count, **kwargs)
            for p in range(process_count)]
  assert all(len(s) == len(single) for s in shares)
  assert len(single) == (N * num_epochs // 8 if drop_remainder
                         else -(-N * num_epochs // 8))
  for b in range(len(single)):
    parts = [s[b] for s in shares]
    assert parts[0]["image"].shape == (8 // process_count, 4, 4, 1)
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    _assert_batches_equal([joined], [single[b]])


def test_batch_layout_dtypes_and_augmentation():
  it = data.make_iterator(_toy(), batch_size=8, shuffle=False, augment=_noise)
  batch = next(it)
  assert batch["image"].dtype == np.float32 and batch["image"].shape == (8, 4, 4, 1)
  assert batch["label"].dtype == np.int32 and batch["label"].shape == (8,)
  assert batch["mask"].dtype == np.float32 and np.all(batch["mask"] == 1.0)
  np.testing.assert_array_equal(batch["index"], np.arange(8))
  offsets = batch["image"][:, 0, 0, 0] - np.arange(8) / 100.0
  assert np.all((offsets > 0) & (offsets < 1)) and len(set(offsets)) == 8


def test_shuffle_differs_per_epoch_and_covers_each_epoch():
  ds = data.make_batch_dataset(_toy(32), batch_size=8, shuffle=True, seed=0,
                               num_epochs=2)
  order = np.concatenate([ds[b]["index"] for b in range(len(ds))])
  first, second = order[:32], order[32:]
  assert sorted(first) == list(range(32)) and sorted(second) == list(range(32))
  assert not np.array_equal(first, second)
  assert not np.array_equal(first, np.arange(32))


@pytest.mark.parametrize("process_index", [0, 1])
def test_get_state_set_state_resumes_exactly(process_index):
  kwargs = dict(batch_size=8, shuffle=True, seed=5, num_epochs=None,
                process_index=process_index, process_count=2, augment=_noise)
  it = data.make_iterator(_toy(), **kwargs)
  _batches(it, 7)  # crosses an epoch boundary (37 / 8 < 7 / 2 global batches)
  state = json.loads(json.dumps(it.get_state()))
  expected = _batches(it, 6)
  resumed = data.make_iterator(_toy(), **kwargs)
  resumed.set_state(state)
  _assert_batches_equal(_batches(resumed, 6), expected)
  fresh = data.make_iterator(_toy(), **kwargs)
  assert not np.array_equal(next(fresh)["index"], expected[0]["index"])


def test_eval_padding_covers_every_example_once():
  process_count, seen, padding = 2, [], 0
  lengths = []
  for p in range(process_count):
    it = data.make_iterator(_toy(), batch_size=8, shuffle=False,
                            drop_remainder=False, process_index=p,
                            process_count=process_count)
    batches = list(it)
    lengths.append(len(batches))
    for batch in batches:
      assert batch["image"].shape == (4, 4, 4, 1)
      real = batch["mask"] == 1.0
      seen.extend(batch["index"][real].tolist())
      padding += int(np.sum(batch["mask"] == 0.0))
      assert np.all(batch["image"][~real] == 0.0)
  assert lengths == [5, 5]  # ceil(37 / 8) global batches for every process
  assert sorted(seen) == list(range(N)) and padding == 5 * 8 - N


def test_train_drops_the_remainder():
  batches = list(data.make_iterator(_toy(), batch_size=8, shuffle=False))
  assert len(batches) == N // 8
  np.testing.assert_array_equal(
      np.concatenate([b["index"] for b in batches]), np.arange(N // 8 * 8))


@pytest.mark.parametrize("kwargs,message", [
    (dict(batch_size=6, process_count=4), r"batch_size must be a multiple of "
     r"process_count=4.*got batch_size=6"),
    (dict(batch_size=8, process_index=2, process_count=2),
     r"process_index must be an integer in \[0, process_count=2\); got 2"),
    (dict(batch_size=8, num_epochs=None, drop_remainder=False),
     r"drop_remainder=False.*finite num_epochs"),
    (dict(batch_size=64), r"batch_size=64 is larger than the 37 examples"),
    (dict(batch_size=0), r"batch_size must be an integer >= 1; got 0"),
    (dict(batch_size=8, seed=-1), r"seed must be an integer >= 0; got -1"),
])
def test_bad_arguments_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    data.make_batch_dataset(_toy(), shuffle=True, **kwargs)


def test_augment_must_keep_the_shape():
  ds = data.make_batch_dataset(_toy(), batch_size=8, shuffle=False,
                               augment=lambda image, rng: image[:2])
  with pytest.raises(ValueError, match=r"augment must return .*\(4, 4, 1\).*"
                     r"\(2, 4, 1\)"):
    ds[0]  # pylint: disable=pointless-statement


def test_unprepared_dataset_raises_with_instructions(tmp_path):
  with pytest.raises(ValueError, match=r"(?s)name=.cifar10., split=.train.*not "
                     r"prepared.*download_and_prepare"):
    data.get_image_dataset("cifar10", "train", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match=r"reads TFDS 'mnist'.*not prepared"):
    data.get_image_dataset("rotmnist", "test", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match=r"name='no_such_data' is not a TFDS"):
    data.get_image_dataset("no_such_data", "train", data_dir=str(tmp_path))


def test_mock_mnist_grey_to_rgb_resize_and_rotmnist(tmp_path):
  with tfds.testing.mock_data(num_examples=6):
    mnist = data.get_image_dataset("mnist", "test", data_dir=str(tmp_path))
    rgb = data.get_image_dataset("mnist", "test", data_dir=str(tmp_path),
                                 channels=3, image_size=32)
    rot = data.get_image_dataset("rotmnist", "test", data_dir=str(tmp_path))
    assert mnist.image_shape == (28, 28, 1) and rgb.image_shape == (32, 32, 3)
    raw = mnist.records[4]["image"].astype(np.float32) / 255.0
    np.testing.assert_array_equal(mnist[4]["image"], raw)
    np.testing.assert_allclose(rgb[4]["image"][..., 1],
                               data.resize_image(raw, 32, 32)[..., 0], atol=1e-6)
    angles = [rot.angle(i) for i in range(6)]
    assert len(set(angles)) == 6 and all(0 <= a < 2 * np.pi for a in angles)
    assert angles == [rot.angle(i) for i in range(6)]
    np.testing.assert_allclose(
        rot[4]["image"], np.clip(data.rotate_image(raw, angles[4]), 0, 1))
  with pytest.raises(ValueError, match="no per-example rotation"):
    mnist.angle(0)
  with pytest.raises(ValueError, match=r"channels must be 1, 3 or None; got 2"):
    data.get_image_dataset("mnist", "test", channels=2)


_MOCK_CIFAR_WITHOUT_TF = """
import importlib.abc
import importlib.machinery
import importlib.util
import sys


class NoTensorFlow(importlib.abc.MetaPathFinder):
  # The path finder, except that TensorFlow is not found, as if not installed.

  def find_spec(self, name, path=None, target=None):
    if name == "tensorflow" or name.startswith("tensorflow."):
      return None
    return importlib.machinery.PathFinder.find_spec(name, path, target)


sys.meta_path = [NoTensorFlow() if f is importlib.machinery.PathFinder else f
                 for f in sys.meta_path]
assert importlib.util.find_spec("tensorflow") is None
import numpy as np
import tensorflow_datasets as tfds
from canon_jax import data
with tfds.testing.mock_data(num_examples=20):
  ds = data.get_image_dataset("cifar10", "train", data_dir=sys.argv[1])
  it = data.make_iterator(ds, batch_size=8, shuffle=True, num_epochs=None,
                          process_index=1, process_count=2)
  batches = [next(it) for _ in range(3)]
assert ds.image_shape == (32, 32, 3) and ds.num_classes == 10 and len(ds) == 20
for b in batches:
  assert b["image"].shape == (4, 32, 32, 3) and b["image"].dtype == np.float32
  assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0
  assert b["label"].dtype == np.int32 and np.all((b["label"] >= 0) & (b["label"] < 10))
print("OK", sorted(k for k in sys.modules
                   if k == "tensorflow" or k.startswith("tensorflow.")))
"""


def test_mock_cifar10_batches_without_tensorflow(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(
      [sys.executable, "-c", textwrap.dedent(_MOCK_CIFAR_WITHOUT_TF),
       str(tmp_path)], capture_output=True, text=True, env=env, timeout=120,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.startswith("OK []"), result.stdout
