"""``python -m train.segment`` end to end in child processes: a random test-sized SAM, a
converted SAM checkpoint directory, and resuming after SIGKILL mid-training."""
import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multidevice import common

pytest.importorskip("pycocotools")

STEPS = 80                       # 16 images / batch 2 = 8 steps per epoch, 10 epochs
OVERRIDES = (
    "--config.data.name=synthetic_instances", "--config.data.image_size=32",
    "--config.data.num_train=16", "--config.data.num_val=4",
    "--config.canonicalizer.features=2", "--config.canonicalizer.kernel_size=3",
    "--config.canonicalizer.num_layers=4", "--config.canonicalizer.resize=16",
    "--config.training.batch_size=2", "--config.training.num_epochs=10",
    "--config.eval.batch_size=4", "--config.checkpoint_every_steps=4",
    "--config.log_every_steps=1", "--config.progress_bar=False",
)
TINY_RANDOM = ("--config.predictor.name=sam_tiny_random",)


def _command(workdir, predictor=TINY_RANDOM):
  return [sys.executable, "-m", "train.segment", "--config=train/configs/coco_sam_c4.py",
          f"--workdir={workdir}", *OVERRIDES, *predictor]


def _run(workdir, predictor=TINY_RANDOM):
  done = common.run(_command(workdir, predictor), common.env(1), timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  with open(os.path.join(workdir, "eval.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def tiny_random_run(tmp_path_factory):
  """An uninterrupted run with the random test-sized SAM: (workdir, eval.json)."""
  workdir = str(tmp_path_factory.mktemp("tiny_random"))
  return workdir, _run(workdir)


def test_sam_tiny_random_run_scores_c4_equivariantly(tiny_random_run):
  workdir, result = tiny_random_run
  assert set(result) == {"sam", "sam+canonicalizer", "identity_rate"}
  assert 0 <= result["identity_rate"] <= 1
  for name in ("sam", "sam+canonicalizer"):
    entry = result[name]
    assert len(entry["per_element_mAP"]) == 4 and entry["mAP"] == entry["per_element_mAP"][0]
    assert entry["group_averaged_mAP"] == pytest.approx(np.mean(entry["per_element_mAP"]))
  canon = result["sam+canonicalizer"]
  # Exact C4 equivariance: SAM sees the same canonical image at every pose, so every
  # pose scores the same. A random SAM earns no AP at IoU >= .5; the prompts' mean
  # IoU tells its masks apart.
  assert abs(canon["group_averaged_mAP"] - canon["mAP"]) <= 1e-6
  assert canon["per_element_prompt_mIoU"] == [canon["prompt_mIoU"]] * 4
  assert canon["group_averaged_prompt_mIoU"] == pytest.approx(canon["prompt_mIoU"], abs=1e-12)
  assert canon["prompt_mIoU"] > 0.01
  # SAM alone is not equivariant: its masks, and so its prompt mIoU, change with the pose.
  plain = result["sam"]["per_element_prompt_mIoU"]
  assert max(plain) - min(plain) > 1e-4, plain
  lines = common.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  assert [r["step"] for r in lines] == list(range(1, STEPS + 1))


def _save_tiny_sam(directory, seed=0):
  """SamTiny initialised as ``sam_tiny_random`` is (same key), every parameter
  created, written as a converted SAM checkpoint directory."""
  from canon_jax import convert
  from canon_jax.models import sam
  module = sam.SamTiny()
  s, e = module.image_size, module.embedding_size
  variables = jax.jit(module.init)(
      jax.random.key(seed), jnp.zeros((1, s, s, 3)), jnp.zeros((1, 1, 4)),
      jnp.zeros((1, 1, 1, 2)), jnp.zeros((1, 1, 1), jnp.int32),
      jnp.zeros((1, 1, 4 * e, 4 * e)))
  convert.save_pretrained(directory, variables, convert.SamMetadata(
      "tiny", s, sam.PIXEL_MEAN, sam.PIXEL_STD, "random"))


def test_converted_sam_checkpoint_run(tiny_random_run, tmp_path):
  _save_tiny_sam(str(tmp_path / "sam_tiny"))
  result = _run(str(tmp_path / "run"),
                (f"--config.predictor.checkpoint={tmp_path / 'sam_tiny'}",))
  canon = result["sam+canonicalizer"]
  assert abs(canon["group_averaged_mAP"] - canon["mAP"]) <= 1e-6
  assert canon["per_element_prompt_mIoU"] == [canon["prompt_mIoU"]] * 4
  # Flax derives each parameter's init from its module path, so the checkpoint holds
  # sam_tiny_random's weights (plus the mask-prompt layers, unused): same scores.
  np.testing.assert_equal(result, tiny_random_run[1])   # nan == nan here


@pytest.mark.slow
def test_resume_after_sigkill_mid_training_matches_uninterrupted_run(tiny_random_run,
                                                                     tmp_path):
  reference, want_eval = tiny_random_run
  workdir = str(tmp_path / "run")
  proc = subprocess.Popen(_command(workdir), cwd=common.REPO, env=common.env(1),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  common.wait_for(lambda: common.latest_step(workdir, "canonicalizer"), proc,
                  "the first checkpoint", poll=0.005)
  proc.send_signal(signal.SIGKILL)       # nothing is saved on the way out
  proc.wait(timeout=60)
  stopped = common.latest_step(workdir, "canonicalizer")
  assert 4 <= stopped < STEPS and not os.path.exists(os.path.join(workdir, "eval.json"))

  np.testing.assert_equal(_run(workdir), want_eval)
  got, want = (common.load_state(w, "canonicalizer") for w in (workdir, reference))
  assert int(got["step"]) == STEPS
  jax.tree.map(np.testing.assert_array_equal, got, want)   # bit for bit
  assert (common.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          == common.read_jsonl(os.path.join(reference, "metrics.jsonl")))
