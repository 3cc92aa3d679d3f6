"""Part segmentation: mIoU by hand, segmentation heads, per-point invariance of the
canonicalized model, the generated and ShapeNet-part datasets."""
import os

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy.spatial.transform import Rotation

import canon_jax
from canon_jax import models
from canon_jax.data import parts
from canon_jax.part_segmentation import mean_part_iou, part_ious, restrict_to_parts


def test_part_ious_hand_computed():
  pred = jnp.array([[0, 0, 1, 1, 2, 2], [3, 3, 3, 4, 4, 4]])
  true = jnp.array([[0, 1, 1, 1, 2, 0], [3, 3, 3, 4, 4, 4]])
  # Shape 0 over all 5 labels: part 0: 1/3, part 1: 2/3, part 2: 1/2, parts 3, 4
  # absent from both: 1.  Shape 1: parts 3, 4 exact, parts 0-2 absent: all 1.
  expected0 = (1 / 3 + 2 / 3 + 1 / 2 + 1 + 1) / 5
  np.testing.assert_allclose(part_ious(pred, true, 5), [expected0, 1.0], rtol=1e-6)
  # Restricted to each shape's category parts (0-2 and 3-4).
  mask = jnp.array([[1, 1, 1, 0, 0], [0, 0, 0, 1, 1]], bool)
  np.testing.assert_allclose(part_ious(pred, true, 5, mask), [0.5, 1.0], rtol=1e-6)
  np.testing.assert_allclose(mean_part_iou(pred, true, 5, mask), 0.75, rtol=1e-6)
  np.testing.assert_allclose(mean_part_iou(pred, true, 5, mask, jnp.array([1.0, 0.0])),
                             0.5, rtol=1e-6)
  # A part predicted but absent from the truth scores 0.
  np.testing.assert_allclose(part_ious(jnp.array([[1, 1]]), jnp.array([[0, 0]]), 2), [0.0])
  with pytest.raises(ValueError, match=r"\(S, N\)"):
    part_ious(pred[0], true[0], 5)


def test_restrict_to_parts():
  logits = jnp.array([[[5.0, 1.0, 2.0, 0.0]]])
  assert int(restrict_to_parts(logits, jnp.array([[0, 1, 1, 0]], bool))[0, 0]) == 2


@pytest.mark.parametrize("name", ["pointnet_seg_tiny", "dgcnn_seg_tiny"])
def test_segmentation_heads_shapes(name):
  model = models.get_model(name, num_classes=6)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 3)), jnp.float32)
  variables = model.init(jax.random.key(0), x)
  out = model.apply(variables, x)
  assert out.shape == (2, 32, 6)
  # Per-point: permuting the points permutes the logits (inference mode).
  perm = np.random.default_rng(1).permutation(32)
  np.testing.assert_allclose(model.apply(variables, x[:, perm]), out[:, perm], atol=1e-5)


def test_canonicalized_part_labels_invariant_under_so3():
  model = canon_jax.CanonicalizedModel(
      predictor=models.get_model("pointnet_seg_tiny", num_classes=6),
      canonicalizer=canon_jax.PointCloudCanonicalizer(network="vn", num_neighbors=8,
                                                      num_layers=2, channels=8))
  data = parts.make_parts(1, 64, seed=0)
  x = jnp.asarray(data["points"][:2])
  variables = model.init(jax.random.key(0), x)
  apply = jax.jit(lambda p: jnp.argmax(model.apply(variables, p).predictions, -1))
  labels = np.asarray(apply(x))
  assert len(np.unique(labels)) > 1   # not a constant labelling
  for seed in range(3):
    q = Rotation.random(2, random_state=seed).as_matrix().astype(np.float32)
    rotated = np.asarray(apply(jnp.einsum("bnj,bij->bni", x, q)))
    np.testing.assert_array_equal(rotated, labels)


def test_make_parts_deterministic_and_labelled():
  a, b = parts.make_parts(2, 128, seed=3), parts.make_parts(2, 128, seed=3)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  table = parts.part_mask_table(parts.CATEGORY_PARTS, parts.NUM_PARTS)
  assert table.shape == (5, 12)
  # Every point's label belongs to its shape's category; every category uses them all.
  assert np.all(np.take_along_axis(table[a["category"]], a["label"].astype(int), 1))
  for c in range(5):
    used = np.unique(a["label"][a["category"] == c])
    np.testing.assert_array_equal(used, parts.CATEGORY_PARTS[parts.CATEGORY_NAMES[c]])
  np.testing.assert_allclose(a["points"].mean(axis=1), 0.0, atol=0.02)


def test_canon_parts_builder(tmp_path):
  ds = parts.get_parts_dataset("canon_parts/tiny", "train", data_dir=str(tmp_path))
  assert len(ds) == 20 and ds.num_classes == 12 and ds.up_axis == 2
  ex = ds[0]
  assert ex["points"].shape == (64, 3) and ex["label"].shape == (64,)
  assert ex["label"].dtype == np.int32 and ds.part_mask[ex["category"]][ex["label"]].all()


def _write_part_h5(path, n, seed):
  rng = np.random.default_rng(seed)
  categories = rng.integers(0, 16, n)
  ranges = list(parts.SHAPENET_CATEGORY_PARTS.values())
  pid = np.stack([rng.choice(ranges[c], parts.SHAPENET_NUM_POINTS) for c in categories])
  with h5py.File(path, "w") as f:
    f["data"] = rng.normal(size=(n, parts.SHAPENET_NUM_POINTS, 3)).astype(np.float32)
    f["label"] = categories.reshape(n, 1).astype(np.uint8)
    f["pid"] = pid.astype(np.uint8)
  return categories, pid


def test_shapenet_part_hdf5_builder(tmp_path):
  manual = tmp_path / "manual" / parts.SHAPENET_PART_FOLDER
  manual.mkdir(parents=True)
  cats, pid = _write_part_h5(manual / "ply_data_train0.h5", 3, 0)
  _write_part_h5(manual / "ply_data_val0.h5", 1, 1)
  _write_part_h5(manual / "ply_data_test0.h5", 2, 2)
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(ValueError, match="manual download"):
    parts.get_parts_dataset("shapenet_part_hdf5", "train", data_dir=data_dir)
  parts.ShapenetPartHdf5(data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
  ds = parts.get_parts_dataset("shapenet_part_hdf5", "train", data_dir=data_dir)
  assert len(ds) == 3 and ds.num_classes == 50 and ds.up_axis == 1
  by_category = sorted((int(ds[i]["category"]), ds[i]["label"].tolist()) for i in range(3))
  assert by_category == sorted((int(c), p.tolist()) for c, p in zip(cats, pid))
  assert len(parts.get_parts_dataset("shapenet_part_hdf5", "test", data_dir=data_dir)) == 2


def test_shapenet_part_h5_rejects_foreign_part_labels(tmp_path):
  path = tmp_path / "ply_data_train0.h5"
  with h5py.File(path, "w") as f:
    f["data"] = np.zeros((1, 4, 3), np.float32)
    f["label"] = np.zeros((1, 1), np.uint8)          # airplane: parts 0-3
    f["pid"] = np.array([[0, 1, 2, 12]], np.uint8)   # 12 is a chair part
  with pytest.raises(ValueError, match="category's range"):
    parts.read_part_h5(path)
  with pytest.raises(FileNotFoundError, match="ply_data_val"):
    parts.find_part_files(tmp_path, "val")


def test_parts_run_through_the_trainer(tmp_path):
  from train import train_and_evaluate, validate_config
  from train.configs import parts_pointnet_so3
  config = parts_pointnet_so3.get_config()
  validate_config(config, 1)
  config.data.name = "canon_parts/tiny"
  config.data.data_dir = str(tmp_path / "tfds")
  config.batch_size, config.eval_batch_size = 4, 5
  config.model.name = "pointnet_seg_tiny"
  config.model.kwargs = {}
  config.canonicalizer.update(num_neighbors=8, channels=4)
  config.data.num_test_poses = 3
  config.variants = ("vanilla", "canonicalized")
  config.canonicalized.init = "vanilla"
  for variant in config.variants:
    config[variant].num_steps = 3
  config.progress_bar = False
  outcome = train_and_evaluate(config, str(tmp_path / "run"))
  canon = outcome["results"]["canonicalized"]
  assert len(canon["per_pose_miou"]) == 3 and canon["num_examples"] == 10
  assert canon["invariance_rate"] == 1.0
  np.testing.assert_allclose(canon["per_pose_miou"], canon["miou"])
  assert 0.0 < canon["miou"] <= 1.0
  assert os.path.exists(tmp_path / "run" / "per_element_accuracy.png")


def test_parts_config_rejects_a_classification_dataset():
  from train import validate_config
  from train.configs import parts_pointnet_so3
  config = parts_pointnet_so3.get_config()
  config.data.name = "canon_shapes/small"
  with pytest.raises(ValueError, match="config.data.name must be one of"):
    validate_config(config, 1)
