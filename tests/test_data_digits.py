"""canon_digits: offline TFDS builder from scikit-learn's digits."""
import numpy as np
import pytest
from sklearn.datasets import load_digits

from canon_jax import data
from canon_jax.data import digits


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  digits.prepare_digits(32, data_dir=path)
  return path


@pytest.fixture(scope="module")
def splits(data_dir):
  return {s: data.get_image_dataset("canon_digits", s, data_dir=data_dir)
          for s in ("train", "test")}


def _stack(ds):
  examples = [ds[i] for i in range(len(ds))]
  return (np.stack([e["image"] for e in examples]),
          np.array([e["label"] for e in examples]))


def test_splits_shapes_and_value_range(splits):
  assert {s: len(ds) for s, ds in splits.items()} == {"train": 1347, "test": 450}
  for ds in splits.values():
    assert ds.image_shape == (32, 32, 1) and ds.num_classes == 10
    images, labels = _stack(ds)
    assert images.dtype == np.float32 and images.shape == (len(ds), 32, 32, 1)
    assert labels.dtype == np.int32 and set(labels.tolist()) == set(range(10))
    assert images.min() == 0.0 and images.max() == 1.0


def test_records_are_the_sklearn_digits_and_splits_are_disjoint(splits):
  ref = load_digits()
  rows = {s: np.array([ds.records[i]["index"] for i in range(len(ds))])
          for s, ds in splits.items()}
  np.testing.assert_array_equal(np.sort(np.concatenate(list(rows.values()))),
                                np.arange(1797))
  fixed = digits.split_indices()
  for s in ("train", "test"):
    np.testing.assert_array_equal(np.sort(rows[s]), np.sort(fixed[s]))
  for i in range(0, 450, 45):
    row = rows["test"][i]
    example = splits["test"][i]
    assert example["label"] == ref.target[row]
    np.testing.assert_array_equal(
        example["image"],
        digits.render_digit(ref.images[row], 32).astype(np.float32) / 255.0)


def test_split_permutation_is_fixed():
  a, b = digits.split_indices(), digits.split_indices()
  np.testing.assert_array_equal(a["train"], b["train"])
  assert len(set(a["train"]) & set(a["test"])) == 0


def test_digits_lie_inside_the_disk(splits):
  images, _ = _stack(splits["train"])
  c = (32 - 1) / 2
  rows, cols = np.mgrid[0:32, 0:32]
  r = np.hypot(rows - c, cols - c)
  # The mask is 1 up to 0.9 * 16 = 14.4 px: the whole digit lies inside it ...
  assert np.all(images[:, r >= 14.4] == 0.0)
  # ... and the digits do reach close to it (upsampled to ~65% of the side).
  assert images[:, (r > 10) & (r < 14.4)].max() > 0.5
  mask = digits.disk_mask(32)[..., 0]
  assert np.all(mask[r > 16] == 0.0) and np.all(mask[r <= 14.4] == 1.0)


def test_rotation_about_the_centre_loses_no_ink(splits):
  images, _ = _stack(splits["test"])
  for image in images[:20]:
    for angle in (np.pi / 4, 1.0, 2.5):
      rotated = data.rotate_image(image, angle)
      np.testing.assert_allclose(rotated.sum(), image.sum(), rtol=0.03)


def test_three_channels_by_repetition(data_dir):
  ds = data.get_image_dataset("canon_digits", "test", data_dir=data_dir,
                              channels=3)
  assert ds.image_shape == (32, 32, 3)
  image = ds[7]["image"]
  assert image.shape == (32, 32, 3)
  np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_other_size_is_prepared_on_demand(data_dir):
  ds = data.get_image_dataset("canon_digits", "test", data_dir=data_dir,
                              image_size=16)
  assert ds.image_shape == (16, 16, 1) and len(ds) == 450
  image = ds[0]["image"]
  assert image.shape == (16, 16, 1) and image.max() > 0.5
  assert digits.inner_size(16) == 10
  with pytest.raises(ValueError, match=r"image_size must be an integer >= 16.*8"):
    digits.DigitsConfig.for_size(8)
