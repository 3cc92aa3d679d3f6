"""Data parallelism: 8 simulated devices, and 2 processes, train like 1 device.

The runs with several devices or processes are children (``python -m train``)
started with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` and the
collective time-out flag; the 1-device reference runs in this process. All train
the tiny canonicalized model for 20 SGD steps on the same global batches of 16.
"""
import json
import os
import subprocess
import sys

import pytest

from multidevice import common
from multidevice import tiny_digits

pytestmark = pytest.mark.slow

STEPS = 20
OVERRIDES = ["--config.variants=('canonicalized',)",
             "--config.canonicalized.init=pretrained",
             f"--config.canonicalized.num_steps={STEPS}",
             "--config.canonicalized.optimizer=sgd",
             "--config.canonicalized.predictor_lr=0.05",
             "--config.canonicalized.canonicalizer_lr=0.005",
             f"--config.checkpoint_every_steps={STEPS}",
             "--config.num_visualize=0"]


def _config(data_dir):
  config = tiny_digits.get_config()
  config.data.data_dir = data_dir
  config.variants = ("canonicalized",)
  config.canonicalized.init = "pretrained"
  config.canonicalized.num_steps = STEPS
  config.canonicalized.optimizer = "sgd"
  config.canonicalized.predictor_lr = 0.05
  # With the identity prior's weight of 100, a canonicalizer rate of 0.05 kills the
  # tiny network's ReLUs within a few steps: all logits tie, and which tied element
  # the argmax picks then depends on float reduction order (one device vs eight).
  config.canonicalized.canonicalizer_lr = 0.005
  config.checkpoint_every_steps = STEPS
  config.num_visualize = 0
  return config


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
  """The 1-device, 1-process run (in this process)."""
  from train import train_and_evaluate
  workdir = str(tmp_path_factory.mktemp("one_device"))
  outcome = train_and_evaluate(_config(data_dir), workdir)
  assert outcome["train_step_traces"] == {"canonicalized": 1}
  return workdir, outcome


def _check_same_run(workdir, reference_workdir):
  state = common.load_state(workdir, "canonicalized")
  expected = common.load_state(reference_workdir, "canonicalized")
  assert int(state["step"]) == int(expected["step"]) == STEPS
  assert common.max_relative_error(state["params"], expected["params"]) <= 1e-5
  assert common.max_relative_error(state["batch_stats"], expected["batch_stats"]) <= 1e-5
  with open(os.path.join(workdir, "eval.json")) as f:
    got = json.load(f)
  with open(os.path.join(reference_workdir, "eval.json")) as f:
    want = json.load(f)
  assert got["per_element_accuracy"] == pytest.approx(want["per_element_accuracy"])
  assert got["identity_rate"] == pytest.approx(want["identity_rate"])


def test_eight_devices_match_one_device(reference, data_dir, tmp_path):
  workdir = str(tmp_path / "eight")
  proc = common.run(common.train_command(workdir, data_dir, OVERRIDES), common.env(8))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "8 device(s)" in proc.stdout
  _check_same_run(workdir, reference[0])


def test_batch_not_divisible_by_devices_fails_before_compiling(data_dir, tmp_path):
  script = f"""
import jax, jax.monitoring
from multidevice import tiny_digits
from train import train_and_evaluate
compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: compiles.append(event)
    if event == "/jax/core/compile/backend_compile_duration" else None)
config = tiny_digits.get_config()
config.data.data_dir = {data_dir!r}
config.batch_size = 12
try:
  train_and_evaluate(config, {str(tmp_path)!r})
except ValueError as e:
  print("ERROR:", e)
print("DEVICES", jax.device_count(), "COMPILES", len(compiles))
"""
  environment = common.env(8, PYTHONPATH=f"{common.REPO}:{common.REPO}/tests")
  proc = common.run([sys.executable, "-c", script], environment)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "ERROR: config.batch_size must be divisible by the number of devices (8)" in (
      proc.stdout)
  assert "DEVICES 8 COMPILES 0" in proc.stdout


def test_two_processes_match_one_process(reference, data_dir, tmp_path):
  """jax.distributed on localhost (gloo CPU collectives), 2 devices per process."""
  workdir = str(tmp_path / "two")
  port = common.free_port()
  procs = [subprocess.Popen(
      common.train_command(workdir, data_dir, OVERRIDES + [
          f"--coordinator_address=localhost:{port}", "--num_processes=2",
          f"--process_id={i}"]),
      cwd=common.REPO, env=common.env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  outputs = []
  for proc in procs:
    try:
      outputs.append(proc.communicate(timeout=300))
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      raise
  for proc, (out, err) in zip(procs, outputs):
    assert proc.returncode == 0, err[-3000:]
  assert "2 process(es), 4 device(s)" in outputs[0][0]
  _check_same_run(workdir, reference[0])
