"""Point clouds through the training system: data source, task, update step, eval, run."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import canon_jax
from canon_jax import data
from helpers import set_field
from multidevice import common, tiny_shapes
from train import evaluate, models, report, step, tasks, train_and_evaluate, validate_config
from train.configs import shapes_pointnet_so3

NUM_POSES = tiny_shapes.NUM_POSES


@pytest.fixture(scope="module")
def points_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds_points"))
  data.CanonShapes(config="tiny", data_dir=path).download_and_prepare()
  return path


def tiny_config(data_dir: str) -> ml_collections.ConfigDict:
  config = tiny_shapes.get_config()
  config.data.data_dir = data_dir
  return config


def test_point_cloud_dataset_reads_the_prepared_split(points_dir):
  ds = data.get_point_cloud_dataset("canon_shapes/tiny", "train", data_dir=points_dir)
  points, labels, _ = data.make_shapes(4, 64, seed=0)
  assert (len(ds), ds.input_shape, ds.num_classes, ds.up_axis) == (40, (64, 3), 10, 2)
  got = {int(ds[i]["label"]): [] for i in range(len(ds))}
  for i in range(len(ds)):
    got[int(ds[i]["label"])].append(ds[i]["points"])
  # The same clouds as make_shapes (TFDS shuffles the record order).
  for c in range(10):
    want = sorted(points[labels == c].sum(axis=(1, 2)).round(4))
    assert sorted(np.sum(got[c], axis=(1, 2)).round(4)) == want
  assert ds[0]["points"].dtype == np.float32 and ds[0]["label"].dtype == np.int32


def test_point_cloud_dataset_errors(tmp_path):
  with pytest.raises(ValueError, match="canon_shapes"):
    data.get_point_cloud_dataset("shapenet", "train", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="manual download"):
    data.get_point_cloud_dataset("modelnet40_hdf5", "train", data_dir=str(tmp_path))


def test_z_training_rotations_keep_the_up_axis_and_the_prior_moves_along():
  task = tasks.PointCloudTask(train_rotation="z", test_rotation="so3", num_test_poses=3,
                              up_axis=2, seed=0)
  x = jax.random.normal(jax.random.key(0), (5, 16, 3))
  rotated, q = task.train_inputs(jax.random.key(1), x, False)
  np.testing.assert_allclose(rotated[..., 2], x[..., 2], atol=1e-6)      # about z
  np.testing.assert_allclose(rotated, jnp.einsum("bnj,bij->bni", x, q), atol=1e-6)
  assert not np.allclose(rotated, x, atol=1e-3)
  so3, _ = task.train_inputs(jax.random.key(1), x, True)
  assert not np.allclose(so3[..., 2], x[..., 2], atol=1e-3)              # SO(3) baseline

  # Prior of a frame R = Q R0 against the applied rotation Q is mean (R0 - I)^2.
  r0 = canon_jax.data.random_rotations(jax.random.key(2), 5, "so3")
  result = canon_jax.PointCloudCanonicalization(
      rotation=q @ r0, canonical=x, vectors=x[:, :2], centroid=x[:, 0])
  prior = canon_jax.canonicalization_prior(result, task.prior_target(q, False))
  hits = task.identity_hits(result, q)
  np.testing.assert_allclose(prior, np.mean((np.asarray(r0) - np.eye(3)) ** 2), rtol=1e-5)
  angles = np.degrees(np.arccos(np.clip((np.trace(r0, axis1=1, axis2=2) - 1) / 2, -1, 1)))
  np.testing.assert_array_equal(hits, (angles < 30).astype(np.float32))


def test_test_poses_start_with_the_identity_and_are_rotations():
  task = tasks.PointCloudTask(train_rotation="z", test_rotation="so3", num_test_poses=5,
                              up_axis=2, seed=3)
  q = task.test_rotations()
  assert q.shape == (5, 3, 3)
  np.testing.assert_allclose(q[0], np.eye(3))
  np.testing.assert_allclose(q @ np.swapaxes(q, 1, 2), np.broadcast_to(np.eye(3), q.shape),
                             atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(q), 1.0, atol=1e-5)
  np.testing.assert_allclose(task.test_rotations(), q)                     # deterministic


def test_point_eval_step_of_a_canonicalized_model_is_invariant(points_dir):
  config = tiny_config(points_dir)
  model = models.build_model(config, models.variant_spec(config, "canonicalized"), 10,
                             None)
  task = tasks.PointCloudTask("z", "so3", NUM_POSES, 2, 0)
  ds = data.get_point_cloud_dataset("canon_shapes/tiny", "test", data_dir=points_dir)
  points = jnp.stack([ds[i]["points"] for i in range(6)])
  variables = model.init(jax.random.key(0), points)
  batch = {"points": points, "label": jnp.zeros(6, jnp.int32), "mask": jnp.ones(6)}
  out = jax.jit(task.make_eval_step(model))(variables["params"],
                                            variables["batch_stats"], batch)
  assert out["predictions"].shape == (NUM_POSES, 6)
  # Same class in every pose, frames moving with the input (to float error).
  assert np.all(out["predictions"] == out["predictions"][0])
  assert float(jnp.max(out["equivariance_angle"])) < 0.5
  scores = task.score(evaluate.gather_outputs([out]), True)
  assert scores["invariance_rate"] == 1.0 and len(scores["per_element_accuracy"]) == NUM_POSES


def test_point_train_step_reduces_the_loss(points_dir):
  config = tiny_config(points_dir)
  task = tasks.PointCloudTask("z", "so3", NUM_POSES, 2, 0)
  spec = models.variant_spec(config, "canonicalized")
  model = models.build_model(config, spec, 10, None)
  stage = config.canonicalized
  stage.schedule = "constant"  # (the tiny config's 4 steps would end a cosine at once)
  tx, schedules = step.make_optimizer(stage)
  ds = data.get_point_cloud_dataset("canon_shapes/tiny", "train", data_dir=points_dir)
  batch = {"points": jnp.stack([ds[i]["points"] for i in range(8)]),
           "label": jnp.asarray([ds[i]["label"] for i in range(8)]),
           "mask": jnp.ones(8)}
  state = step.init_state(model, tx, jax.random.key(0), batch["points"])
  fn = jax.jit(step.make_train_step(model, tx, schedules, spec, task))
  losses = []
  for _ in range(20):
    state, metrics = fn(state, batch, jax.random.key(1))
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.85 * losses[0], losses
  assert set(state.batch_stats) == {"canonicalizer", "predictor"}
  assert state.batch_stats["canonicalizer"]  # Vector Neuron batch norm is trained


def test_point_cloud_run_through_the_trainer(points_dir, tmp_path):
  config = tiny_config(points_dir)
  outcome = train_and_evaluate(config, str(tmp_path))
  assert outcome["train_step_traces"] == {"vanilla": 1, "augmentation": 1,
                                          "canonicalized": 1}
  with open(os.path.join(tmp_path, "eval.json")) as f:
    summary = json.load(f)
  for entry in (summary, *summary["baselines"].values()):
    assert set(report.EVAL_KEYS) <= set(entry)
    assert len(entry["per_element_accuracy"]) == NUM_POSES
    np.testing.assert_allclose(entry["g_averaged_accuracy"],
                               np.mean(entry["per_element_accuracy"]), atol=1e-6)
    assert entry["num_examples"] == 20
  assert summary["invariance_rate"] == 1.0          # canonicalized: invariant
  assert summary["max_equivariance_angle_deg"] < 0.5
  assert summary["baselines"]["vanilla"]["max_equivariance_angle_deg"] is None
  assert os.path.exists(os.path.join(tmp_path, "per_element_accuracy.png"))

  # Resuming a finished run trains nothing and reports the same numbers.
  again = train_and_evaluate(config, str(tmp_path))
  assert again["train_step_traces"] == {v: 0 for v in config.variants}
  assert again["eval"]["per_element_accuracy"] == summary["per_element_accuracy"]


def test_config_validates_and_documents_its_command():
  config = shapes_pointnet_so3.get_config()
  validate_config(config, device_count=8, process_count=2)
  doc = " ".join(shapes_pointnet_so3.__doc__.replace("\\\n", " ").split())
  assert "python -m train --config train/configs/shapes_pointnet_so3.py" in doc
  assert "Expected result" in doc
  assert (config.task, config.data.train_rotation, config.data.test_rotation) == (
      "points", "z", "so3")


@pytest.mark.parametrize("field, value, message", [
    ("data.train_rotation", "x", "config.data.train_rotation must be one of"),
    ("data.name", "cifar10", "config.data.name must be one of ['canon_shapes'"),
    ("data.num_test_poses", 0, "config.data.num_test_poses must be an integer >= 1"),
    ("model.normalize", "imagenet", "None for point clouds"),
    ("task", "audio", "config.task must be 'images', 'points', 'parts' or 'nbody'"),
])
def test_point_config_errors_name_the_field(field, value, message):
  config = shapes_pointnet_so3.get_config()
  set_field(config, field, value)
  with pytest.raises(ValueError, match=message.replace("[", r"\[")):
    validate_config(config, device_count=1)


def test_unknown_canonicalizer_field_is_rejected():
  config = shapes_pointnet_so3.get_config()
  config.canonicalizer.kernel_size = 3
  with pytest.raises(ValueError, match="kernel_size"):
    validate_config(config, device_count=1)


@pytest.mark.slow
def test_point_cloud_run_on_eight_devices_matches_one_device(points_dir, tmp_path):
  # SGD: Adam's g / sqrt(v) would magnify the reduction-order rounding of the tiniest
  # gradient entries, which differs between 1 and 8 devices.
  # The canonicalized variant takes one step: the tiny VN frame's gradients are large
  # (Gram-Schmidt of short vectors) and amplify the reduction-order rounding that
  # differs between 1 and 8 devices from one step to the next.
  overrides = ["--config.variants=('vanilla', 'canonicalized')",
               "--config.vanilla.optimizer=sgd", "--config.canonicalized.optimizer=sgd",
               "--config.canonicalized.num_steps=1"]
  config = tiny_config(points_dir)
  config.variants = ("vanilla", "canonicalized")
  config.vanilla.optimizer = config.canonicalized.optimizer = "sgd"
  config.canonicalized.num_steps = 1
  one = str(tmp_path / "one")
  train_and_evaluate(config, one)
  eight = str(tmp_path / "eight")
  proc = common.run(common.train_command(
      eight, points_dir, overrides,
      config=os.path.join("tests", "multidevice", "tiny_shapes.py")), common.env(8))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "8 device(s)" in proc.stdout
  for variant in config.variants:
    got, want = common.load_state(eight, variant), common.load_state(one, variant)
    assert common.max_relative_error(got["params"], want["params"]) <= 1e-5
    assert common.max_relative_error(got["batch_stats"], want["batch_stats"]) <= 1e-5
  with open(os.path.join(eight, "eval.json")) as f, open(os.path.join(one, "eval.json")) as g:
    assert json.load(f)["per_element_accuracy"] == pytest.approx(
        json.load(g)["per_element_accuracy"])
