"""Helpers shared by tests/test_train*.py: subprocess runs of ``python -m train``.

Several simulated CPU devices need ``XLA_FLAGS`` before JAX starts, and several
processes need their own interpreters, so those runs go through subprocesses. The
collective time-out flag makes a CPU rendezvous hang fail in seconds.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join("tests", "multidevice", "tiny_digits.py")
COLLECTIVE_TIMEOUT = "--xla_cpu_collective_call_terminate_timeout_seconds=10"


def env(num_devices: int = 1, **extra: str) -> dict[str, str]:
  """Environment of a child run: CPU only, ``num_devices`` simulated devices.

  The child draws random numbers as this process does (tests/conftest.py may turn
  ``jax_threefry_partitionable`` off), so its runs can be compared with runs here.
  """
  import jax  # pylint: disable=import-outside-toplevel
  out = dict(os.environ)
  out.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
             JAX_THREEFRY_PARTITIONABLE=str(bool(jax.config.jax_threefry_partitionable)),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices} "
                       f"{COLLECTIVE_TIMEOUT}")
  out.update(extra)
  return out


def train_command(workdir: str, data_dir: str, overrides: Sequence[str] = (),
                  config: str = TINY_CONFIG) -> list[str]:
  """``python -m train --config CONFIG --workdir WORKDIR --config.data.data_dir=...``."""
  return [sys.executable, "-m", "train", f"--config={config}", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}", *overrides]


def run(command: list[str], environment: dict[str, str], timeout: float = 300
        ) -> subprocess.CompletedProcess:
  """Runs a child to completion in the repository root; output captured as text."""
  return subprocess.run(command, cwd=REPO, env=environment, capture_output=True,
                        text=True, timeout=timeout)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def latest_step(workdir: str, variant: str) -> int | None:
  """The newest committed checkpoint step of ``variant`` in ``workdir``."""
  directory = os.path.join(workdir, "checkpoints", variant)
  if not os.path.isdir(directory):
    return None
  steps = [int(d) for d in os.listdir(directory) if d.isdigit()]
  return max(steps) if steps else None


def load_state(workdir: str, variant: str, step: int | None = None) -> dict[str, Any]:
  """The saved TrainState of ``variant`` at ``step`` (default: latest) as numpy."""
  import jax  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  step = latest_step(workdir, variant) if step is None else step
  path = os.path.join(workdir, "checkpoints", variant, str(step), "state")
  checkpointer = ocp.StandardCheckpointer()
  stored = checkpointer.metadata(path).item_metadata
  stored = getattr(stored, "tree", stored)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), stored)
  return jax.tree.map(np.asarray, checkpointer.restore(path, target))


def flat(tree: Any) -> dict[str, np.ndarray]:
  """``{'a/b/c': leaf}`` of a nested dict (numpy leaves)."""
  import jax  # pylint: disable=import-outside-toplevel
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def max_relative_error(a: Any, b: Any) -> float:
  """Largest per-leaf ``||a - b|| / max(||b||, 1)`` (the trees must match).

  The floor of 1 keeps leaves whose exact value is 0 from dividing rounding noise by
  itself (the last group convolution's bias has an exactly zero gradient: it shifts
  all |G| logits alike). The whole-tree relative error is checked too.
  """
  fa, fb = flat(a), flat(b)
  assert fa.keys() == fb.keys(), (sorted(fa.keys() ^ fb.keys()))
  per_leaf = max(float(np.linalg.norm(fa[k] - fb[k]) / max(np.linalg.norm(fb[k]), 1.0))
                 for k in fa)
  va = np.concatenate([fa[k].ravel() for k in sorted(fa)])
  vb = np.concatenate([fb[k].ravel() for k in sorted(fb)])
  whole = float(np.linalg.norm(va - vb) / max(np.linalg.norm(vb), 1e-12))
  return max(per_leaf, whole)


def assert_close(got: Any, want: Any, rel: float = 1e-6, where: str = "") -> None:
  """Recursive equality of JSON-like values, floats to ``rel`` relative tolerance."""
  if isinstance(want, dict):
    assert isinstance(got, dict) and got.keys() == want.keys(), (where, got, want)
    for k in want:
      assert_close(got[k], want[k], rel, f"{where}/{k}")
  elif isinstance(want, (list, tuple)):
    assert len(got) == len(want), (where, got, want)
    for i, (g, w) in enumerate(zip(got, want)):
      assert_close(g, w, rel, f"{where}[{i}]")
  elif isinstance(want, float):
    assert abs(got - want) <= rel * max(abs(want), 1e-12), (where, got, want)
  else:
    assert got == want, (where, got, want)


def read_jsonl(path: str) -> list[dict[str, Any]]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def wait_for(predicate: Callable[[], bool], proc: subprocess.Popen, what: str,
             timeout: float = 240.0, poll: float = 0.02) -> None:
  """Polls ``predicate`` until it holds; raises AssertionError (with the child's stderr)
  if the child ``proc`` ends first, or kills it and raises after ``timeout`` s."""
  deadline = time.time() + timeout
  while not predicate():
    if proc.poll() is not None:
      raise AssertionError(f"run ended early ({proc.returncode}): "
                           f"{proc.stderr.read()[-3000:]}")
    if time.time() > deadline:
      proc.kill()
      raise AssertionError(f"timed out waiting for {what}")
    time.sleep(poll)
