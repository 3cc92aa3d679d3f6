"""Generated shapes, rotation augmentation, and the offline TFDS builders."""
import h5py
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from canon_jax.data import modelnet40, shapes


def test_make_shapes_layout_and_determinism():
  points, labels, names = shapes.make_shapes(3, 128, seed=7)
  assert len(names) >= 8 and names == shapes.CLASS_NAMES
  assert points.shape == (3 * len(names), 128, 3) and points.dtype == np.float32
  assert labels.shape == (3 * len(names),) and labels.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(labels), np.full(len(names), 3))
  # Centred, unit maximum radius (before the +-0.05 jitter).
  assert np.abs(points.mean(axis=1)).max() < 0.01
  radius = np.linalg.norm(points, axis=-1).max(axis=1)
  assert np.all((radius > 0.93) & (radius < 1.09))
  again, labels_again, _ = shapes.make_shapes(3, 128, seed=7)
  np.testing.assert_array_equal(again, points)
  np.testing.assert_array_equal(labels_again, labels)
  other, _, _ = shapes.make_shapes(3, 128, seed=8)
  assert np.abs(other - points).max() > 0.1


def test_samples_depend_only_on_seed_class_and_index():
  small, small_labels, _ = shapes.make_shapes(1, 64, seed=3)
  big, big_labels, _ = shapes.make_shapes(2, 64, seed=3)
  for label in range(len(shapes.CLASS_NAMES)):
    first = small[small_labels == label][0]
    assert any(np.array_equal(first, p) for p in big[big_labels == label])


def _fraction(mask) -> float:
  return float(np.mean(mask))


def test_primitives_are_uniform_on_their_surfaces():
  rng = np.random.default_rng(0)
  n = 40_000
  tol = 0.015  # ~4 standard errors at n = 40k
  # Cylinder r=0.5, h=1: caps are 2 pi r^2 / (2 pi r h + 2 pi r^2) = 1/3 of the area.
  cyl = shapes._cylinder(0.5, 1.0).sample(rng, n)
  np.testing.assert_allclose(np.linalg.norm(cyl[:, :2], axis=-1).max(), 0.5, atol=1e-6)
  assert abs(_fraction(np.isclose(np.abs(cyl[:, 2]), 0.5)) - 1 / 3) < tol
  # Cone r=0.6, h=0.8 (slant 1): the lateral surface is pi r s / (pi r s + pi r^2)
  # = 1/1.6 of the area; on it, the half nearer the apex holds 1/4 of the points.
  cone = shapes._cone(0.6, 0.8).sample(rng, n)
  side = ~np.isclose(cone[:, 2], -0.4)
  assert abs(_fraction(side) - 1 / 1.6) < tol
  assert abs(_fraction(cone[side, 2] > 0.0) - 0.25) < tol
  # Torus R=0.8, r=0.3: the outer half (cos phi > 0) holds (pi R + 2 r)/(2 pi R).
  tor = shapes._torus(0.8, 0.3).sample(rng, n)
  ring = np.linalg.norm(tor[:, :2], axis=-1)
  np.testing.assert_allclose(np.hypot(ring - 0.8, tor[:, 2]), 0.3, atol=1e-5)
  assert abs(_fraction(ring > 0.8) - (np.pi * 0.8 + 0.6) / (1.6 * np.pi)) < tol
  # Box with half extents (1, 0.5, 0.25): faces normal to x hold 0.125/0.875.
  box = shapes._box((1.0, 0.5, 0.25)).sample(rng, n)
  assert np.all(np.isclose(np.abs(box), [1.0, 0.5, 0.25]).any(axis=-1))
  assert abs(_fraction(np.isclose(np.abs(box[:, 0]), 1.0)) - 0.125 / 0.875) < tol
  # Sphere: the upper cap z > 0.5 holds (1 - 0.5) / 2 of the area (Archimedes).
  sph = shapes._sphere(1.0).sample(rng, n)
  assert abs(_fraction(sph[:, 2] > 0.5) - 0.25) < tol


def _flip_asymmetry(z: np.ndarray) -> float:
  """Kolmogorov-Smirnov distance between the distributions of z and -z."""
  grid = np.linspace(-1.0, 1.0, 401)
  return float(np.abs((z[:, None] <= grid).mean(0) - (-z[:, None] <= grid).mean(0)).max())


def test_composites_have_a_preferred_orientation():
  """Upside down, cones, arrows, mugs, tables and ells look different; spheres and
  tori do not (so orientation matters for part of the classes)."""
  def asym(name, seed):
    return _flip_asymmetry(shapes.sample_shape(name, 4096,
                                               np.random.default_rng(seed))[:, 2])
  for seed in range(2):
    for name in ("cone", "arrow", "mug", "table", "ell"):
      assert asym(name, seed) > 0.08, name
    for name in ("sphere", "torus"):
      assert asym(name, seed) < 0.05, name


@pytest.mark.parametrize("mode", ["none", "z", "so3"])
def test_rotate_point_clouds(mode):
  points, _, _ = shapes.make_shapes(1, 32, seed=0)
  rotated = np.asarray(shapes.rotate_point_clouds(points, mode, jax.random.key(0)))
  np.testing.assert_allclose(np.linalg.norm(rotated, axis=-1),
                             np.linalg.norm(points, axis=-1), atol=1e-5)
  # Each cloud moved rigidly: recover its rotation by least squares (Procrustes).
  qs = np.stack([np.linalg.lstsq(p, r, rcond=None)[0].T
                 for p, r in zip(points, rotated)])
  np.testing.assert_allclose(qs @ qs.transpose(0, 2, 1),
                             np.broadcast_to(np.eye(3), qs.shape), atol=1e-4)
  np.testing.assert_allclose(np.linalg.det(qs), 1.0, atol=1e-4)
  if mode == "none":
    np.testing.assert_array_equal(rotated, points)
  elif mode == "z":
    np.testing.assert_allclose(rotated[..., 2], points[..., 2], atol=1e-6)
    assert np.abs(rotated - points).max() > 0.1
  else:
    assert np.abs(rotated[..., 2] - points[..., 2]).max() > 0.1


def test_random_rotations_distribution():
  key = jax.random.key(1)
  so3 = np.asarray(shapes.random_rotations(key, 4000, "so3"))
  # Haar measure: E[Q] = 0 and E[Q_ij^2] = 1/3; proper rotations.
  assert np.abs(so3.mean(axis=0)).max() < 0.05
  np.testing.assert_allclose((so3 ** 2).mean(axis=0), 1 / 3, atol=0.03)
  np.testing.assert_allclose(np.linalg.det(so3), 1.0, atol=1e-5)
  about_y = np.asarray(shapes.random_rotations(key, 100, "z", up_axis=1))
  np.testing.assert_allclose(about_y[:, 1], np.broadcast_to([0.0, 1.0, 0.0], (100, 3)),
                             atol=1e-6)
  np.testing.assert_allclose(np.linalg.det(about_y), 1.0, atol=1e-5)
  with pytest.raises(ValueError, match=r"mode must be 'none', 'z' or 'so3'; got 'xyz'"):
    shapes.random_rotations(key, 2, "xyz")


def _records(source) -> list[tuple[int, bytes]]:
  return sorted((int(r["label"]), r["points"].tobytes()) for r in source)


def test_canon_shapes_tfds_builder(tmp_path):
  builder = shapes.CanonShapes(config="tiny", data_dir=tmp_path)
  builder.download_and_prepare()
  source = tfds.data_source("canon_shapes/tiny", data_dir=tmp_path)
  cfg = builder.builder_config
  names = builder.info.features["label"].names
  assert tuple(names) == shapes.CLASS_NAMES
  for split, per_class, seed in (("train", cfg.train_per_class, cfg.seed),
                                 ("test", cfg.test_per_class, cfg.seed + 1)):
    assert len(source[split]) == per_class * len(names)
    record = source[split][0]
    assert record["points"].shape == (64, 3) and record["points"].dtype == np.float32
    points, labels, _ = shapes.make_shapes(per_class, cfg.num_points, seed)
    expected = sorted((int(y), p.tobytes()) for p, y in zip(points, labels))
    assert _records(source[split]) == expected


def _write_h5(path, points, labels):
  with h5py.File(path, "w") as f:
    f["data"] = points
    f["label"] = labels.reshape(-1, 1).astype(np.uint8)


def test_modelnet40_builder_reads_the_hdf5_release(tmp_path):
  release = tmp_path / "manual" / modelnet40.RELEASE_FOLDER
  release.mkdir(parents=True)
  rng = np.random.default_rng(0)
  written = {"train": [], "test": []}
  # Two train files (named so that text order differs from numeric order), one test.
  for split, index in (("train", 0), ("train", 10), ("test", 0)):
    points = rng.normal(size=(2, modelnet40.NUM_POINTS, 3)).astype(np.float32)
    labels = rng.integers(0, 40, size=2)
    _write_h5(release / f"ply_data_{split}{index}.h5", points, labels)
    written[split] += [(int(y), p.tobytes()) for p, y in zip(points, labels)]
  assert [f.name for f in modelnet40.find_split_files(tmp_path / "manual", "train")] == [
      "ply_data_train0.h5", "ply_data_train10.h5"]

  builder = modelnet40.Modelnet40Hdf5(data_dir=tmp_path / "data")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=tmp_path / "manual"))
  source = tfds.data_source("modelnet40_hdf5", data_dir=tmp_path / "data")
  assert builder.info.features["label"].names[:3] == ["airplane", "bathtub", "bed"]
  assert len(builder.info.features["label"].names) == 40
  for split in ("train", "test"):
    assert len(source[split]) == len(written[split])
    assert _records(source[split]) == sorted(written[split])


def test_modelnet40_builder_missing_files_error(tmp_path):
  (tmp_path / "manual").mkdir()
  (tmp_path / "manual" / "readme.txt").write_text("not the data")
  builder = modelnet40.Modelnet40Hdf5(data_dir=tmp_path / "data")
  with pytest.raises(FileNotFoundError) as err:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=tmp_path / "manual"))
  message = str(err.value)
  for part in ("ply_data_train", "modelnet40_ply_hdf5_2048.zip", str(tmp_path / "manual"),
               "manual_dir"):
    assert part in message


def test_modelnet40_rejects_malformed_files(tmp_path):
  path = tmp_path / "ply_data_train0.h5"
  _write_h5(path, np.zeros((2, 100, 3), np.float32), np.zeros(2))
  with pytest.raises(ValueError, match=r"'data' must have shape \(n, 2048, 3\); got "
                                       r"\(2, 100, 3\)"):
    modelnet40.read_h5(path)
