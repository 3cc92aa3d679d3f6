"""End to end: the tiny digits run and its outputs, resuming after SIGTERM and SIGKILL,
one step of every paper config on mock data, and bad configs failing early."""
import importlib
import json
import os
import signal
import struct
import subprocess

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from multidevice import common
from multidevice import tiny_digits
from train import report, train_and_evaluate

VARIANTS = ("vanilla", "augmentation", "canonicalized")


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
  """An uninterrupted tiny digits run, in this process."""
  config = tiny_digits.get_config()
  config.data.data_dir = data_dir
  workdir = str(tmp_path_factory.mktemp("reference"))
  return workdir, train_and_evaluate(config, workdir)


def _read_events(path):
  """(tag, step, value) of every scalar in a TensorBoard event file."""
  from tensorboardX.proto import event_pb2
  with open(path, "rb") as f:
    data = f.read()
  scalars, i = [], 0
  while i < len(data):
    (length,) = struct.unpack("<Q", data[i:i + 8])
    event = event_pb2.Event()
    event.ParseFromString(data[i + 12:i + 12 + length])
    scalars += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    i += 12 + length + 4
  return scalars


def test_digits_run_writes_every_output(reference):
  workdir, outcome = reference
  assert outcome["interrupted"] is None
  assert outcome["train_step_traces"] == {v: 1 for v in VARIANTS}

  with open(os.path.join(workdir, "eval.json")) as f:
    summary = json.load(f)
  assert summary["variant"] == "canonicalized"
  assert set(summary["baselines"]) == {"vanilla", "augmentation"}
  for entry in (summary, *summary["baselines"].values()):
    assert set(report.EVAL_KEYS) <= set(entry)
    per = entry["per_element_accuracy"]
    assert len(per) == 8 and all(0 <= a <= 1 for a in per)
    assert entry["accuracy"] == per[0]
    assert entry["g_averaged_accuracy"] == pytest.approx(np.mean(per))
    assert entry["num_examples"] == 32
  for name in ("vanilla", "augmentation"):  # no canonicalizer: always the identity
    assert summary["baselines"][name]["identity_rate"] == 1.0
    assert summary["baselines"][name]["canonicalizer_equivariance_rate"] is None
  assert 0 <= summary["canonicalizer_equivariance_rate"] <= 1
  assert sum(summary["orientation_alignment"]["histogram"]) == pytest.approx(1.0)

  records = common.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  steps = {v: [r["step"] for r in records if r["variant"] == v] for v in VARIANTS}
  assert steps == {"vanilla": list(range(1, 31)), "augmentation": [1, 2],
                   "canonicalized": list(range(1, 13))}
  for r in records:
    weight = 100.0 if r["variant"] == "canonicalized" else 0.0
    assert r["loss"] == pytest.approx(r["task_loss"] + weight * r["prior_loss"], rel=1e-5)
  assert records[0]["lr_predictor"] == pytest.approx(3e-3)  # cosine from 3e-3

  events = _read_events(next(
      os.path.join(workdir, "tensorboard", "canonicalized", f)
      for f in os.listdir(os.path.join(workdir, "tensorboard", "canonicalized"))))
  losses = [(step, value) for tag, step, value in events if tag == "train/loss"]
  assert [s for s, _ in losses] == list(range(1, 13))
  assert losses[-1][1] == pytest.approx(records[-1]["loss"], rel=1e-6)
  assert any(tag == "eval/g_averaged_accuracy" for tag, _, _ in events)

  import matplotlib.image
  for name in ("per_element_accuracy.png", "canonicalization.png"):
    image = matplotlib.image.imread(os.path.join(workdir, name))
    assert image.ndim == 3 and min(image.shape[:2]) > 100
  for variant in VARIANTS:
    assert os.path.exists(os.path.join(workdir, "results", f"{variant}.json"))
    assert common.latest_step(workdir, variant) == tiny_digits.get_config()[variant].num_steps


@pytest.mark.slow
def test_resume_after_sigterm_and_sigkill_matches_uninterrupted_run(
    reference, data_dir, tmp_path):
  ref_dir = reference[0]
  workdir = str(tmp_path / "run")
  command = common.train_command(workdir, data_dir)
  # No persistent compilation cache here: runs that loaded cached CPU executables
  # drifted from the uninterrupted run in the 7th digit after a restore.
  environment = common.env(1)

  def start():
    return subprocess.Popen(command, cwd=common.REPO, env=environment,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

  # SIGTERM during the first variant: it saves where it is and exits with 128 + 15.
  proc = start()
  common.wait_for(lambda: (common.latest_step(workdir, "vanilla") or 0) >= 5, proc,
                  "a vanilla checkpoint")
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 128 + signal.SIGTERM
  stopped_at = common.latest_step(workdir, "vanilla")
  assert 5 <= stopped_at < 30, stopped_at

  # SIGKILL after a checkpoint of the last variant: nothing gets saved on the way out.
  proc = start()
  common.wait_for(lambda: (common.latest_step(workdir, "canonicalized") or 0) >= 5, proc,
                  "a canonicalized checkpoint")
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  assert common.latest_step(workdir, "canonicalized") < 12

  proc = start()
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]

  for variant in VARIANTS:
    got, want = common.load_state(workdir, variant), common.load_state(ref_dir, variant)
    assert int(got["step"]) == int(want["step"])
    assert common.max_relative_error(got, want) <= 1e-6, variant
  got = common.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  want = common.read_jsonl(os.path.join(ref_dir, "metrics.jsonl"))
  assert [(r["variant"], r["step"]) for r in got] == [(r["variant"], r["step"]) for r in want]
  common.assert_close(got, want)
  with open(os.path.join(workdir, "eval.json")) as f1, open(
      os.path.join(ref_dir, "eval.json")) as f2:
    common.assert_close(json.load(f1), json.load(f2))


PAPER_CONFIGS = {
    "cifar10_resnet50_c8": "resnet_tiny",
    "cifar100_resnet50_c8": "resnet_tiny",
    "stl10_resnet50_c8": "resnet_tiny",
    "rotmnist_c8": "resnet_tiny",
    "cifar10_vit_c8": "vit_tiny",
}


def _fake_pretrained(path, name):
  """A converted-checkpoint directory for a tiny model with ImageNet's 1000 classes."""
  from canon_jax import convert, models
  module = models.get_model(name, num_classes=1000)
  variables = jax.jit(module.init)(jax.random.key(7), np.zeros((1, 32, 32, 3), np.float32))
  convert.save_pretrained(path, variables, convert.PretrainedMetadata(
      architecture=name, source="torchvision", num_classes=1000, image_size=32,
      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), origin="test"))
  return variables


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_config_runs_one_step_on_mock_data(name, tmp_path):
  """The real config with a tiny predictor and canonicalizer, on mock TFDS data."""
  config = importlib.import_module(f"train.configs.{name}").get_config()
  assert config.canonicalized.prior_weight == (0.0 if name == "rotmnist_c8" else 100.0)
  assert config.data.image_size == 224 and config.model.normalize == "auto"
  config.data.data_dir = str(tmp_path / "tfds")
  config.data.image_size = 32
  config.model.name = PAPER_CONFIGS[name]
  config.batch_size = config.eval_batch_size = 8
  config.canonicalizer.update(features=2, num_layers=2, resize=16)
  config.num_visualize = 0  # the canonicalization plot is tested on digits
  config.progress_bar = False
  config.canonicalized.num_steps = 1
  pretrained = None
  if name == "cifar10_resnet50_c8":  # the pretrained path: load, new head, strict merge
    config.model.pretrained = str(tmp_path / "pretrained")
    pretrained = _fake_pretrained(config.model.pretrained, config.model.name)
    config.vanilla.num_steps = 0  # vanilla = the loaded checkpoint, evaluated as is
    config.variants = ("vanilla", "canonicalized")
  else:
    config.model.pretrained = None
    config.variants = ("canonicalized",)
  with tfds.testing.mock_data(num_examples=16):
    outcome = train_and_evaluate(config, str(tmp_path / "run"))
  assert outcome["train_step_traces"] == {
      v: config[v].num_steps for v in config.variants}
  with open(tmp_path / "run" / "eval.json") as f:
    summary = json.load(f)
  assert set(report.EVAL_KEYS) <= set(summary) and summary["num_examples"] == 16
  if pretrained is not None:
    assert set(summary["baselines"]) == {"vanilla"}
    loaded = outcome["states"]["vanilla"]
    np.testing.assert_array_equal(loaded.params["predictor"]["conv1"]["kernel"],
                                  pretrained["params"]["conv1"]["kernel"])
    np.testing.assert_array_equal(loaded.batch_stats["predictor"]["bn1"]["var"],
                                  pretrained["batch_stats"]["bn1"]["var"])
    assert loaded.params["predictor"]["head"]["kernel"].shape == (64, 10)


@pytest.fixture
def compile_events():
  """Counts XLA compilations while the test runs."""
  events = []
  armed = [True]

  def listener(event, duration, **kwargs):
    del duration, kwargs
    if armed[0] and event == "/jax/core/compile/backend_compile_duration":
      events.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  yield events
  armed[0] = False
  jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("field, value, message", [
    ("data.name", "no_such_dataset", "config.data.name must be one of"),
    ("group", "Q8", "config.group must name a group"),
    ("model.name", "resnet51", "config.model.name must be one of"),
    ("canonicalized.optimizer", "lamb", "config.canonicalized.optimizer must be"),
    ("variants", ("canonicalized", "vanilla"), "config.canonicalized.init must be"),
    ("model.pretrained", "/no/such/checkpoint", "config.model.pretrained must be"),
])
def test_bad_config_fails_before_compiling(field, value, message, data_dir, tmp_path,
                                           compile_events):
  config = tiny_digits.get_config()
  config.data.data_dir = data_dir
  *parents, leaf = field.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  node[leaf] = value
  with pytest.raises(ValueError, match=message):
    train_and_evaluate(config, str(tmp_path))
  assert compile_events == []


def test_optimized_canonicalizer_config_trains_through_the_trainer(data_dir, tmp_path):
  """train/configs/digits_c8_optimized.py, shrunk: a non-equivariant CNN scored over
  the 8 copies, its orthogonality loss in the step, Gumbel selection (its "gumbel"
  PRNG stream comes from the step)."""
  config = importlib.import_module("train.configs.digits_c8_optimized").get_config()
  assert config.canonicalizer.type == "optimized"
  config.data.data_dir = data_dir
  config.data.eval_split = "test[:16]"
  config.batch_size = config.eval_batch_size = 8
  config.variants = ("canonicalized",)
  config.canonicalized.update(init="pretrained", num_steps=3)
  config.model.kwargs.features = (4, 8)
  config.canonicalizer.network = dict(name="small_cnn", kwargs=dict(features=(4,)),
                                      features=4)
  config.canonicalizer.selection = "gumbel"
  config.num_visualize = 2
  config.progress_bar = False
  outcome = train_and_evaluate(config, str(tmp_path))
  assert outcome["train_step_traces"] == {"canonicalized": 1}
  state = outcome["states"]["canonicalized"]
  assert "reference" in state.params["canonicalizer"]
  with open(tmp_path / "eval.json") as f:
    summary = json.load(f)
  # The canonicalizer is scored like the equivariant one (its element under the poses).
  assert summary["canonicalizer_equivariance_rate"] is not None
  assert summary["num_examples"] == 16
