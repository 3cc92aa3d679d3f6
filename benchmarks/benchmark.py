"""Speed benchmark: canon_jax against the PyTorch reference equiadapt 0.1.2.

Both libraries run on the same machine, in the same process, on the same numpy
inputs (converted to jax / torch arrays), with the same architectures and losses::

  python -m train.benchmark --quick --out quick.json   # < 5 min on 2 CPU cores
  python -m train.benchmark --out full.json            # realistic batch sizes
  python -m train.benchmark --quick --flops --profile  # + XLA FLOPs, step breakdown
  python -m train.benchmark --device gpu --out gpu.json  # GPU, FLOPs and MFU
  python -m train.benchmark --quick --batch 8 --rows train_step  # another batch
  python -m train.benchmark --quick --dtype bfloat16 --rows train_step,inference

Rows (``--rows`` selects some):

* ``canonicalizer``: C8 rotated-filter group-conv net (lift 5x5, 32 channels,
  3 layers) forward + backward of the prior loss on (B, 96, 96, 3) images
  (equiadapt ``CustomEquivariantNetwork`` vs :class:`canon_jax.nn.GroupConvNet`).
* ``train_step``: C8 canonicalizer + ResNet50 on (B, 224, 224, 3), forward,
  backward and SGD (momentum 0.9) update of ``CE + 100 * prior`` (equiadapt
  ``GroupEquivariantImageCanonicalization`` + torchvision ``resnet50`` vs
  :class:`canon_jax.ImageCanonicalizer` + ``canon_jax.models.ResNet50``, one jitted
  step). The predictor alone is timed too, for the canonicalizer's overhead.
* ``pointcloud``: Vector Neuron canonicalizer (k = 20) + PointNet, (B, 1024, 3),
  forward + backward of ``CE + rotation prior`` (equiadapt ``VNSmall`` +
  ``EquivariantPointcloudCanonicalization`` + a torch PointNet written here with
  canon_jax's layout vs ``PointCloudCanonicalizer(network="vn")`` +
  ``canon_jax.models.PointNet``).
* ``inference``: canonicalize-then-predict vs averaging the predictor over all 8
  rotations (both canon_jax, the same ResNet50): the baseline is the averaging.

``--dtype bfloat16`` runs the image predictor (ResNet50; rows ``train_step`` and
``inference``) in mixed precision on both sides: canon_jax's ``dtype=bfloat16``
(bfloat16 activations and matmuls, float32 parameters, batch statistics and loss),
torch's ``autocast`` to bfloat16 around the predictor's forward. The canonicalizers,
their priors and the other rows stay float32.

Per row and side: median step time after warm-up (JAX compile time separately),
throughput, peak memory, and ``speedup`` = baseline median / canon_jax median.

Method (also in ``train/BENCHMARKS.md``):

* Timing: ``time.perf_counter`` around one step; JAX outputs are
  ``block_until_ready``-ed (torch on CPU is synchronous). Each library's cases run
  round-robin in blocks (canon_jax, reference, canon_jax), every block after one
  untimed step (:func:`schedule`): a change of load hits both sides alike, and no
  timed step follows a step of the other library.
* Threads: ``--threads N`` (default: every core the process may use) pins the
  process to N cores (``os.sched_setaffinity``) and sets
  ``torch.set_num_threads(N)``; XLA's CPU client sizes its intra-op pool from the
  machine and can only run on the pinned cores.
* Memory on CPU: peak resident set size during the warm-up steps minus the RSS
  before the side's models and inputs were built (sampled every 2 ms from
  ``/proc/self/statm``, after ``malloc_trim``), so it counts parameters, optimizer
  state, activations and, for JAX, the executable; compile-time memory is not
  counted. JAX rows also report XLA's own buffer plan (``memory_analysis``:
  arguments + outputs + temporaries). On GPU: XLA's plan for JAX,
  ``torch.cuda.max_memory_allocated`` for torch.
* Host memory (``--malloc``): by default glibc is told to reuse freed blocks
  (:mod:`train.host_memory`) instead of unmapping XLA's per-step temporary buffer
  and faulting it in again every step; both libraries share the setting.
* FLOPs (``--flops``, always on GPU): XLA's ``cost_analysis()`` of the compiled
  step; MFU = FLOPs / median time / the measured peak of a matmul (bf16 on GPU,
  float32 on CPU).

The reference is imported lazily: without the ``bench`` extra (equiadapt 0.1.2,
e2cnn, kornia, hydra-core, torch, torchvision) only the canon_jax rows run.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import canon_jax
from canon_jax import models as canon_models
from canon_jax.nn import GroupConvNet
from canon_jax.pointcloud import PointCloudCanonicalizer
from train import host_memory

ROWS = ("canonicalizer", "train_step", "pointcloud", "inference")
"""Row names, in the order they run."""
DTYPES = ("float32", "bfloat16")
"""Compute dtypes of the image predictor (``--dtype``)."""
PREDICTOR_DTYPE_ROWS = ("train_step", "inference")
"""The rows whose image predictor ``--dtype`` sets."""

GROUP = "C8"
LIFT_PADDING = "VALID"      # equiadapt's custom network: 5x5 lift without padding
PRIOR_WEIGHT = 100.0        # equiadapt's prior weight for images
ROTATION_PRIOR_WEIGHT = 1.0
NUM_CLASSES = 10            # images (CIFAR-10 in the paper)
NUM_CLOUD_CLASSES = 40      # ModelNet40
NUM_NEIGHBORS = 20          # equiadapt's VN canonicalizer: n_knn 20
LEARNING_RATE = 1e-3
MOMENTUM = 0.9
BENCH_EXTRA_HINT = (
    "equiadapt (the `bench` extra) is not installed: only the canon_jax rows run. "
    "Install it with `pip install -e .[bench]` (equiadapt==0.1.2, e2cnn, kornia, "
    "hydra-core, torch, torchvision).")


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Shapes and repetitions of one benchmark mode.

  Attributes:
    canon_batch, canon_size: row 1 batch and image side (also the side the row-2
      canonicalizer resizes its input to).
    train_batch, image_size: row 2 batch and image side.
    predictor: canon_jax model name of the image predictor (torch rows need
      "resnet50", torchvision's).
    cloud_batch, num_points, pointnet: row 3 batch, points per cloud, and the
      PointNet (features, head) widths.
    infer_batch: row 4 batch (the averaging runs the predictor on 8x as many).
    warmup, iters: untimed steps after compilation, timed steps per side.
    predictor_dtype: compute dtype of the image predictor ("float32" or
      "bfloat16", :data:`DTYPES`); parameters and everything else stay float32.
  """
  canon_batch: int
  train_batch: int
  cloud_batch: int
  infer_batch: int
  warmup: int
  iters: int
  canon_size: int = 96
  image_size: int = 224
  predictor: str = "resnet50"
  num_points: int = 1024
  pointnet: tuple[tuple[int, ...], tuple[int, ...]] = ((64, 128, 1024), (512, 256))
  predictor_dtype: str = "float32"


MODES = {
    "full": Sizes(canon_batch=64, train_batch=32, cloud_batch=32, infer_batch=32,
                  warmup=2, iters=10),
    # About 4 min on 2 cores (BENCHMARKS.md). 7 timed steps: with 3, the medians of
    # row 2 moved by up to 3% between runs of the same code.
    "quick": Sizes(canon_batch=4, train_batch=2, cloud_batch=8, infer_batch=2,
                   warmup=1, iters=7),
    # Test-sized: dominated by JAX compilation (10-30 s a row on 2 shared cores); the
    # torch image train step has no torchvision counterpart of "resnet_tiny" and is
    # skipped.
    "tiny": Sizes(canon_batch=2, train_batch=2, cloud_batch=2, infer_batch=2, warmup=1,
                  iters=2, canon_size=24, image_size=40, predictor="resnet_tiny",
                  num_points=32, pointnet=((8, 16, 32), (16,))),
}
"""``--quick``, ``--tiny`` or neither (``full``)."""


# ---------------------------------------------------------------------------------
# Machine, threads and memory
# ---------------------------------------------------------------------------------


def configure_threads(threads: int | None) -> int:
  """Pins the process to ``threads`` cores (default: all allowed) for XLA and torch.

  Every existing thread is pinned (XLA's pool may already exist) and new threads
  inherit the mask. Returns the number of cores used. torch's intra-op threads are
  set when torch is imported (:func:`_import_reference`).
  """
  allowed = sorted(os.sched_getaffinity(0))
  if threads is None:
    return len(allowed)
  if not 1 <= threads <= len(allowed):
    raise ValueError(f"--threads must be in [1, {len(allowed)}] (the cores this "
                     f"process may use); got {threads}.")
  for tid in os.listdir("/proc/self/task"):
    with contextlib.suppress(OSError):
      os.sched_setaffinity(int(tid), allowed[:threads])
  return threads


def _cpu_model() -> str:
  with contextlib.suppress(OSError):
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  return platform.processor() or "unknown"


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def machine_info(threads: int) -> dict[str, Any]:
  """CPU model, cores, memory, load, device and package versions."""
  mem_gib = None
  with contextlib.suppress(OSError, ValueError, IndexError):
    line = Path("/proc/meminfo").read_text().splitlines()[0]
    mem_gib = round(int(line.split()[1]) / 2**20, 1)
  packages = ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "torchvision",
              "equiadapt", "kornia", "e2cnn")
  return {
      "cpu": _cpu_model(), "cores": os.cpu_count(), "threads": threads,
      "memory_gib": mem_gib, "load_average": list(os.getloadavg()),
      "platform": platform.platform(), "python": platform.python_version(),
      "jax_device": str(jax.devices()[0]),
      "versions": {p: _version(p) for p in packages},
  }


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
  """Resident set size of this process in bytes."""
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * _PAGE


def _trim() -> None:
  """Collects garbage and returns freed heap pages to the OS (glibc only)."""
  gc.collect()
  host_memory.release_freed_memory()


class _PeakRss:
  """Samples the RSS every ``interval`` seconds in a thread; ``peak`` in bytes."""

  def __init__(self, interval: float = 0.002):
    self.interval = interval
    self.peak = _rss()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, _rss())
      self._stop.wait(self.interval)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, _rss())


# ---------------------------------------------------------------------------------
# Cases: one side of a row, a prepared step
# ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
  """One prepared step to time.

  Attributes:
    label: what runs ("canon_jax", "equiadapt 0.1.2", ...).
    step: runs one step and returns when its results are computed.
    examples: examples per step (for the throughput).
    compile_s: JAX lowering + compilation time (None for torch).
    flops: FLOPs per step from XLA's cost analysis (None if unknown).
    xla_bytes: XLA's buffer plan of the step: arguments + outputs + temporaries.
    device_peak: on GPU, torch's (reset, read) of its peak device bytes.
    framework: the library that runs the step ("jax" or "torch"; see
      :func:`schedule`).
  """
  label: str
  step: Callable[[], None]
  examples: int
  compile_s: float | None = None
  flops: float | None = None
  xla_bytes: int | None = None
  device_peak: tuple[Callable[[], None], Callable[[], int]] | None = None
  framework: str = "jax"


def _cost_flops(compiled) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def _plan_bytes(compiled) -> int | None:
  mem = compiled.memory_analysis()
  if mem is None:
    return None
  return int(mem.argument_size_in_bytes + mem.output_size_in_bytes
             + mem.temp_size_in_bytes - mem.alias_size_in_bytes)


def jax_case(label: str, fn: Callable, args: tuple, examples: int, *,
             stateful: bool = False) -> Case:
  """Compiles ``fn(*args)`` once (timed) and wraps the executable as a :class:`Case`.

  With ``stateful``, ``fn(state, *rest) -> (state, out)``: the state is donated and
  carried from step to step (a train step); otherwise every step reruns ``args``.
  """
  jitted = jax.jit(fn, donate_argnums=(0,) if stateful else ())
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  compile_s = time.perf_counter() - start
  holder = list(args)

  def step():
    out = compiled(*holder)
    if stateful:
      holder[0] = out[0]
    jax.block_until_ready(out)

  return Case(label, step, examples, compile_s=compile_s, flops=_cost_flops(compiled),
              xla_bytes=_plan_bytes(compiled))


# ---------------------------------------------------------------------------------
# Inputs (numpy, shared by both sides)
# ---------------------------------------------------------------------------------


def make_images(batch: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(B, S, S, 3) float32 smooth images in [0, 1] and (B,) int32 labels."""
  rng = np.random.default_rng(seed)
  coarse = rng.random((batch, 8, 8, 3), dtype=np.float32)
  idx = np.arange(size) * 8 // size
  images = coarse[:, idx][:, :, idx] * 0.5 + 0.5 * rng.random(
      (batch, size, size, 3), dtype=np.float32)
  return images, rng.integers(0, NUM_CLASSES, batch).astype(np.int32)


def make_clouds(batch: int, points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(B, N, 3) float32 points on randomly stretched ellipsoids and (B,) labels."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch, points, 3))
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  x *= rng.uniform(0.5, 1.5, (batch, 1, 3))
  return x.astype(np.float32), rng.integers(0, NUM_CLOUD_CLASSES, batch).astype(np.int32)


# ---------------------------------------------------------------------------------
# canon_jax side
# ---------------------------------------------------------------------------------


def _ce(logits, labels):
  # In float32 whatever the predictor's compute dtype, as on the torch side (_torch_loss).
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels).mean()


def jax_canonicalizer_case(sizes: Sizes) -> Case:
  """Row 1: GroupConvNet forward + backward of the identity prior loss."""
  images, _ = make_images(sizes.canon_batch, sizes.canon_size)
  net = GroupConvNet(GROUP, features=32, kernel_size=5, num_layers=3,
                     padding=LIFT_PADDING)
  x = jnp.asarray(images)
  params = net.init(jax.random.key(0), x)["params"]

  def fwd_bwd(params, x):
    return jax.value_and_grad(
        lambda p: canon_jax.prior_loss(net.apply({"params": p}, x)))(params)

  return jax_case("canon_jax", fwd_bwd, (params, x), sizes.canon_batch)


def _image_models(sizes: Sizes):
  canon = canon_jax.ImageCanonicalizer(GROUP, resize=sizes.canon_size,
                                       lift_padding=LIFT_PADDING)
  predictor = canon_models.get_model(sizes.predictor, num_classes=NUM_CLASSES,
                                     dtype=jnp.dtype(sizes.predictor_dtype))
  return canon, predictor


def _init_image_models(sizes: Sizes, x: jax.Array, canonicalize: bool):
  canon, predictor = _image_models(sizes)
  key_c, key_p = jax.random.split(jax.random.key(0))
  pv = predictor.init(key_p, x)
  params = {"predictor": pv["params"]}
  if canonicalize:
    params["canonicalizer"] = canon.init(key_c, x)["params"]
  return canon, predictor, params, pv["batch_stats"]


def jax_train_step_case(sizes: Sizes, canonicalize: bool = True,
                        straight_through: bool = True) -> Case:
  """Row 2: one jitted SGD step of canonicalizer + predictor (or the predictor alone).

  ``straight_through=False`` (profiling only) canonicalizes with the hard element
  (one transform, no task-loss gradient into the canonicalizer).
  """
  images, labels = make_images(sizes.train_batch, sizes.image_size)
  x, y = jnp.asarray(images), jnp.asarray(labels)
  canon, predictor, params, stats = _init_image_models(sizes, x, canonicalize)
  tx = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)
  state = (params, stats, tx.init(params))

  def train_step(state, x, y):
    params, stats, opt_state = state

    def loss_fn(params):
      inputs, prior = x, 0.0
      if canonicalize:
        result = canon.apply({"params": params["canonicalizer"]}, x,
                             train=straight_through)
        inputs, prior = result.canonical, canon_jax.prior_loss(result.logits)
      logits, updates = predictor.apply(
          {"params": params["predictor"], "batch_stats": stats}, inputs, train=True,
          mutable=["batch_stats"])
      return _ce(logits, y) + PRIOR_WEIGHT * prior, updates["batch_stats"]

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), stats, opt_state), loss

  label = "canon_jax" if canonicalize else "canon_jax predictor only"
  return jax_case(label, train_step, (state, x, y), sizes.train_batch, stateful=True)


def _pointnet(sizes: Sizes):
  features, head = sizes.pointnet
  return canon_models.PointNet(num_classes=NUM_CLOUD_CLASSES, features=features, head=head)


def _vn_canonicalizer() -> PointCloudCanonicalizer:
  # Edge layer + one VN layer + linear readout ~ equiadapt's VNSmall (edge layer,
  # one 21->21 and one 21->4 VN layer); the edge layer dominates both.
  return PointCloudCanonicalizer(network="vn", num_neighbors=NUM_NEIGHBORS, num_layers=2)


def jax_pointcloud_case(sizes: Sizes, canonicalize: bool = True) -> Case:
  """Row 3: VN canonicalizer + PointNet forward + backward (training mode)."""
  clouds, labels = make_clouds(sizes.cloud_batch, sizes.num_points)
  x, y = jnp.asarray(clouds), jnp.asarray(labels)
  canon, predictor = _vn_canonicalizer(), _pointnet(sizes)
  key_c, key_p, key_d = jax.random.split(jax.random.key(0), 3)
  cv = canon.init(key_c, x) if canonicalize else {"params": {}, "batch_stats": {}}
  pv = predictor.init(key_p, x)
  params = {"canonicalizer": cv["params"], "predictor": pv["params"]}
  stats = {"canonicalizer": cv["batch_stats"], "predictor": pv["batch_stats"]}

  def fwd_bwd(params, stats, x, y):
    def loss_fn(params):
      inputs, prior = x, 0.0
      if canonicalize:
        result, _ = canon.apply({"params": params["canonicalizer"],
                                 "batch_stats": stats["canonicalizer"]}, x, train=True,
                                mutable=["batch_stats"])
        inputs = result.canonical
        prior = canon_jax.rotation_prior_loss(result.rotation)
      logits, _ = predictor.apply(
          {"params": params["predictor"], "batch_stats": stats["predictor"]}, inputs,
          train=True, mutable=["batch_stats"], rngs={"dropout": key_d})
      return _ce(logits, y) + ROTATION_PRIOR_WEIGHT * prior
    return jax.value_and_grad(loss_fn)(params)

  label = "canon_jax" if canonicalize else "canon_jax predictor only"
  return jax_case(label, fwd_bwd, (params, stats, x, y), sizes.cloud_batch)


def jax_inference_case(sizes: Sizes, mode: str) -> Case:
  """Row 4: ``mode`` "canonicalize" (canonicalize, then predict), "average" (mean
  of the softmax over the 8 rotated copies) or "predictor" (the predictor alone)."""
  images, _ = make_images(sizes.infer_batch, sizes.image_size)
  x = jnp.asarray(images)
  canon, predictor, params, stats = _init_image_models(sizes, x, mode == "canonicalize")
  pvars = {"params": params["predictor"], "batch_stats": stats}
  order = canon_jax.from_name(GROUP).order

  def canonicalize_predict(variables, x):
    result = canon.apply({"params": variables["canonicalizer"]}, x)
    return predictor.apply(variables["predictor"], result.canonical)

  def average(pvars, x):
    copies = canon_jax.all_transforms(x, GROUP)              # (|G|, B, H, W, C)
    logits = predictor.apply(pvars, copies.reshape((-1,) + x.shape[1:]))
    probs = jax.nn.softmax(logits.reshape(order, x.shape[0], -1).astype(jnp.float32),
                           axis=-1)
    return probs.mean(axis=0)

  if mode == "canonicalize":
    return jax_case("canon_jax canonicalize+predict", canonicalize_predict,
                    ({"canonicalizer": params["canonicalizer"], "predictor": pvars}, x),
                    sizes.infer_batch)
  if mode == "average":
    return jax_case(f"canon_jax {order}-way averaging", average, (pvars, x),
                    sizes.infer_batch)
  if mode == "predictor":
    return jax_case("canon_jax predictor only",
                    lambda v, x: predictor.apply(v, x), (pvars, x), sizes.infer_batch)
  raise ValueError(f"mode must be 'canonicalize', 'average' or 'predictor'; got {mode!r}.")


# ---------------------------------------------------------------------------------
# equiadapt side (imported lazily: the `bench` extra)
# ---------------------------------------------------------------------------------


def _torch_autocast(torch, device: str, dtype: str) -> Callable[[], Any]:
  """A factory of the context the torch predictor's forward runs in: ``autocast``
  to ``dtype`` on ``device`` ("cpu" or "cuda"), or nothing for float32."""
  if dtype == "float32":
    return contextlib.nullcontext
  return lambda: torch.autocast(device, dtype=getattr(torch, dtype))


def _torch_loss(torch, predictor, canon, x, y, prior_weight: float,
                autocast: Callable[[], Any] = contextlib.nullcontext):
  """equiadapt's training loss: CE of ``predictor(canon(x))`` plus ``prior_weight`` x
  the canonicalizer's prior (CE of ``predictor(x)`` alone without ``canon``). Only
  the predictor's forward runs under ``autocast()`` (:func:`_torch_autocast`); the
  CE is computed in float32."""
  inputs = x if canon is None else canon(x)
  with autocast():
    logits = predictor(inputs)
  loss = torch.nn.functional.cross_entropy(logits.float(), y)
  if canon is None:
    return loss
  return loss + prior_weight * canon.get_prior_regularization_loss()


def _import_reference(threads: int, device: str):
  """Imports torch, torchvision and equiadapt; sets torch's threads.

  torchvision 0.28 from PyPI is a CUDA build that fails to import next to the CPU
  torch wheel; in a source checkout ``tests/torch_shim.py`` works around it (a
  no-op where torchvision imports normally).

  Raises:
    ImportError: with :data:`BENCH_EXTRA_HINT` when something is missing.
  """
  try:
    import torch  # pylint: disable=import-outside-toplevel
    shim = Path(__file__).resolve().parents[1] / "tests" / "torch_shim.py"
    if shim.exists():
      sys.path.insert(0, str(shim.parent))
      try:
        import torch_shim  # pylint: disable=import-outside-toplevel
      finally:
        sys.path.remove(str(shim.parent))
      torchvision = torch_shim.import_torchvision()
    else:
      import torchvision  # pylint: disable=import-outside-toplevel
    import equiadapt  # pylint: disable=import-outside-toplevel
  except (ImportError, RuntimeError) as err:
    raise ImportError(f"{BENCH_EXTRA_HINT} ({type(err).__name__}: {err})") from err
  torch.set_num_threads(threads)
  if device == "gpu" and not torch.cuda.is_available():
    raise ImportError("--device gpu: torch has no CUDA device here; the equiadapt "
                      "rows are skipped (a GPU-vs-CPU comparison means nothing).")
  return torch, torchvision, equiadapt


class _Torch:
  """The reference models, built on demand; ``dev`` is "cpu" or "cuda"."""

  def __init__(self, threads: int, device: str):
    self.torch, self.torchvision, self.equiadapt = _import_reference(threads, device)
    self.dev = "cuda" if device == "gpu" else "cpu"
    self.label = f"equiadapt {_version('equiadapt')}"

  def tensor(self, array: np.ndarray, nchw: bool = False):
    if nchw:
      array = np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    return self.torch.from_numpy(array).to(self.dev)

  def case(self, label: str, step: Callable[[], None], examples: int) -> Case:
    torch = self.torch
    if self.dev == "cpu":
      return Case(label, step, examples, framework="torch")

    def synced():
      step()
      torch.cuda.synchronize()

    return Case(label, synced, examples, framework="torch", device_peak=(
        torch.cuda.reset_peak_memory_stats, torch.cuda.max_memory_allocated))

  def group_conv_net(self, size: int):
    from equiadapt.images.canonicalization_networks import (  # pylint: disable=import-outside-toplevel
        custom_equivariant_networks)
    n = canon_jax.from_name(GROUP).n
    net = custom_equivariant_networks.CustomEquivariantNetwork(
        (3, size, size), 32, 5, group_type="rotation", num_rotations=n, num_layers=3,
        device=self.dev)
    # equiadapt's canonicalizer reads these, its own network does not set them.
    net.group_type, net.num_rotations = "rotation", n
    return net

  def canonicalizer_case(self, sizes: Sizes) -> Case:
    torch = self.torch
    images, _ = make_images(sizes.canon_batch, sizes.canon_size)
    x = self.tensor(images, nchw=True)
    net = self.group_conv_net(sizes.canon_size).to(self.dev)
    identity = torch.zeros(sizes.canon_batch, dtype=torch.long, device=self.dev)

    def step():
      net.zero_grad(set_to_none=True)
      torch.nn.functional.cross_entropy(net(x), identity).backward()

    return self.case(self.label, step, sizes.canon_batch)

  def train_step_case(self, sizes: Sizes, canonicalize: bool = True) -> Case:
    if sizes.predictor != "resnet50":
      raise NotImplementedError(
          f"no torchvision counterpart of canon_jax's {sizes.predictor!r}")
    torch = self.torch
    from equiadapt.images.canonicalization import discrete_group  # pylint: disable=import-outside-toplevel
    from omegaconf import OmegaConf  # pylint: disable=import-outside-toplevel
    images, labels = make_images(sizes.train_batch, sizes.image_size)
    x, y = self.tensor(images, nchw=True), self.tensor(labels).long()
    predictor = self.torchvision.models.resnet50(weights=None, num_classes=NUM_CLASSES)
    modules = [predictor.to(self.dev).train()]
    canon = None
    if canonicalize:
      hyper = OmegaConf.create({"beta": 1.0, "input_crop_ratio": 0.8,
                                "resize_shape": sizes.canon_size})
      canon = discrete_group.GroupEquivariantImageCanonicalization(
          self.group_conv_net(sizes.canon_size), hyper,
          (3, sizes.image_size, sizes.image_size))
      modules.append(canon.to(self.dev).train())
    opt = torch.optim.SGD([p for m in modules for p in m.parameters()],
                          lr=LEARNING_RATE, momentum=MOMENTUM)
    autocast = _torch_autocast(torch, self.dev, sizes.predictor_dtype)

    def step():
      opt.zero_grad(set_to_none=True)
      _torch_loss(torch, predictor, canon, x, y, PRIOR_WEIGHT, autocast).backward()
      opt.step()

    label = self.label if canonicalize else f"{self.label} predictor only"
    return self.case(label, step, sizes.train_batch)

  def pointnet(self, sizes: Sizes):
    """canon_jax's PointNet layout in torch: per-point MLP with BatchNorm, max pool,
    fully connected head with dropout before the last hidden BatchNorm."""
    nn = self.torch.nn
    features, head = sizes.pointnet

    class PointNet(nn.Module):
      def __init__(self):
        super().__init__()
        layers, width = [], 3
        for i, out in enumerate(features):
          layers += [nn.Conv1d(width, out, 1), nn.BatchNorm1d(out)]
          if i < len(features) - 1:
            layers.append(nn.ReLU())
          width = out
        hidden = []
        for i, out in enumerate(head):
          hidden.append(nn.Linear(width, out))
          if i == len(head) - 1:
            hidden.append(nn.Dropout(0.4))
          hidden += [nn.BatchNorm1d(out), nn.ReLU()]
          width = out
        self.points = nn.Sequential(*layers)
        self.head = nn.Sequential(*hidden, nn.Linear(width, NUM_CLOUD_CLASSES))

      def forward(self, x):  # (B, 3, N)
        return self.head(self.points(x).amax(dim=-1))

    return PointNet()

  def pointcloud_case(self, sizes: Sizes, canonicalize: bool = True) -> Case:
    torch = self.torch
    from equiadapt.pointcloud.canonicalization import continuous_group  # pylint: disable=import-outside-toplevel
    from equiadapt.pointcloud.canonicalization_networks import equivariant_networks  # pylint: disable=import-outside-toplevel
    from omegaconf import OmegaConf  # pylint: disable=import-outside-toplevel
    clouds, labels = make_clouds(sizes.cloud_batch, sizes.num_points)
    x = self.tensor(np.ascontiguousarray(clouds.transpose(0, 2, 1)))   # (B, 3, N)
    y = self.tensor(labels).long()
    predictor = self.pointnet(sizes).to(self.dev).train()
    modules = [predictor]
    canon = None
    if canonicalize:
      net = equivariant_networks.VNSmall(
          OmegaConf.create({"n_knn": NUM_NEIGHBORS, "pooling": "mean"}))
      canon = continuous_group.EquivariantPointcloudCanonicalization(
          net, OmegaConf.create({})).to(self.dev).train()
      modules.append(canon)

    def step():
      for m in modules:
        m.zero_grad(set_to_none=True)
      _torch_loss(torch, predictor, canon, x, y, ROTATION_PRIOR_WEIGHT).backward()

    label = self.label if canonicalize else f"{self.label} predictor only"
    return self.case(label, step, sizes.cloud_batch)


# ---------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------


def _prepare(build: Callable[[], Case], warmup: int, device: str
             ) -> tuple[Case, int | None, str]:
  """Builds a case and runs its warm-up steps.

  Returns the case, its peak memory in bytes and how that was measured (see the
  module docstring).
  """
  _trim()
  base = _rss()
  case = build()
  _trim()
  if case.device_peak is not None:
    case.device_peak[0]()
  with _PeakRss() as peak:
    for _ in range(max(warmup, 1)):
      case.step()
  if device == "cpu":
    return case, max(peak.peak - base, 0), "peak RSS delta"
  if case.device_peak is not None:
    return case, case.device_peak[1](), "torch.cuda.max_memory_allocated"
  return case, case.xla_bytes, "xla memory_analysis"


def schedule(frameworks: dict[str, str], iters: int) -> list[tuple[str, bool]]:
  """The order in which :func:`measure` runs the cases: ``[(key, timed), ...]``.

  ``frameworks`` maps each case (in the row's order) to its library ("jax",
  "torch"). With one library the cases go round-robin, ``iters`` rounds. With
  several, each library's cases go round-robin in blocks, the first library's
  rounds split around the others' (canon_jax, reference, canon_jax: a linear drift
  of the machine hits both alike), and every block starts with one untimed step of
  its first case: at the full sizes a JAX step right after a torch step was 1.5–3.4 s
  (8–17%) slower than the same step after a JAX step (BENCHMARKS.md, 2026-11-29),
  which biased whichever case followed the other library.
  """
  if not isinstance(iters, int) or iters < 1:
    raise ValueError(f"iters must be a positive int; got {iters!r}.")
  libraries: dict[str, list[str]] = {}
  for key, library in frameworks.items():
    libraries.setdefault(library, []).append(key)
  if len(libraries) == 1:
    return [(key, True) for _ in range(iters) for key in frameworks]
  first, *others = libraries
  blocks = [(first, (iters + 1) // 2)] + [(lib, iters) for lib in others]
  blocks.append((first, iters // 2))
  order = []
  for library, rounds in blocks:
    if rounds:
      keys = libraries[library]
      order.append((keys[0], False))
      order += [(key, True) for _ in range(rounds) for key in keys]
  return order


def measure(builders: dict[str, Callable[[], Case]], sizes: Sizes, device: str
            ) -> dict[str, dict[str, Any]]:
  """Prepares every case (one after another), then times them in the order of
  :func:`schedule`.

  Returns ``{key: stats}`` with ``label``, ``median_s``, ``p25_s``, ``p75_s``,
  ``throughput`` (examples/s at the median), ``compile_s``, ``peak_memory_mb``,
  ``memory_method``, ``xla_plan_mb``, ``flops`` and ``steps``.
  """
  cases, memory = {}, {}
  for key, build in builders.items():
    cases[key], *memory[key] = _prepare(build, sizes.warmup, device)
  times = {key: [] for key in cases}
  for key, timed in schedule({k: c.framework for k, c in cases.items()}, sizes.iters):
    start = time.perf_counter()
    cases[key].step()
    if timed:
      times[key].append(time.perf_counter() - start)
  stats = {}
  for key, case in cases.items():
    t = sorted(times[key])
    q = statistics.quantiles(t, n=4) if len(t) > 1 else [t[0], t[0], t[0]]
    median = statistics.median(t)
    peak, method = memory[key]
    stats[key] = {
        "label": case.label, "median_s": median, "p25_s": q[0], "p75_s": q[2],
        "throughput": case.examples / median, "examples": case.examples,
        "compile_s": case.compile_s,
        "peak_memory_mb": None if peak is None else peak / 2**20,
        "memory_method": method,
        "xla_plan_mb": None if case.xla_bytes is None else case.xla_bytes / 2**20,
        "flops": case.flops, "steps": len(t),
    }
  del cases
  _trim()
  return stats


def peak_matmul_flops(device: str) -> tuple[float, str]:
  """Measured matmul FLOP/s on JAX's default device (the MFU denominator).

  bf16 8192^2 on GPU; float32 1024^2 on CPU, where XLA's bf16 matmul is no faster
  than its float32 one (even on a CPU with AVX-512 BF16; BENCHMARKS.md), so float32
  is the peak there also with ``--dtype bfloat16``. Random operands: an H200
  multiplies constant matrices ~13% faster than random ones (the device notes: 894
  vs 788 TFLOP/s), which would understate the MFU. Returns (FLOP/s, dtype name).
  """
  n, dtype = (8192, jnp.bfloat16) if device == "gpu" else (1024, jnp.float32)
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  matmul = jax.jit(lambda a: a @ a).lower(a).compile()
  matmul(a).block_until_ready()
  times = []
  for _ in range(5):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * n**3 / min(times), jnp.dtype(dtype).name


# ---------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------


TITLES = {
    "canonicalizer": "C8 group-conv canonicalizer fwd+bwd",
    "train_step": "C8 canonicalizer + {predictor} SGD train step",
    "pointcloud": "VN canonicalizer + PointNet fwd+bwd",
    "inference": "canonicalize+predict vs 8-way averaging",
}


def _row_builders(row: str, sizes: Sizes, reference: _Torch | None, missing: str | None
                  ) -> tuple[dict[str, Callable[[], Case]], str | None]:
  """The cases of ``row``: keys "canon_jax", "baseline" and extras; and why the
  baseline is missing (or None). ``missing`` says why ``reference`` is None."""
  if row == "canonicalizer":
    builders = {"canon_jax": lambda: jax_canonicalizer_case(sizes)}
    if reference is not None:
      builders["baseline"] = lambda: reference.canonicalizer_case(sizes)
  elif row == "train_step":
    builders = {"canon_jax": lambda: jax_train_step_case(sizes),
                "canon_jax_predictor": lambda: jax_train_step_case(sizes, False)}
    if reference is not None and sizes.predictor == "resnet50":
      builders["baseline"] = lambda: reference.train_step_case(sizes)
      builders["baseline_predictor"] = lambda: reference.train_step_case(sizes, False)
    elif reference is not None:
      missing = f"torchvision has no {sizes.predictor!r}"
  elif row == "pointcloud":
    builders = {"canon_jax": lambda: jax_pointcloud_case(sizes),
                "canon_jax_predictor": lambda: jax_pointcloud_case(sizes, False)}
    if reference is not None:
      builders["baseline"] = lambda: reference.pointcloud_case(sizes)
      builders["baseline_predictor"] = lambda: reference.pointcloud_case(sizes, False)
  elif row == "inference":
    builders = {"canon_jax": lambda: jax_inference_case(sizes, "canonicalize"),
                "baseline": lambda: jax_inference_case(sizes, "average"),
                "canon_jax_predictor": lambda: jax_inference_case(sizes, "predictor")}
    missing = None
  else:
    raise ValueError(f"row must be one of {ROWS}; got {row!r}.")
  return builders, missing


def _batch_and_shape(row: str, sizes: Sizes) -> tuple[int, list[int]]:
  if row == "canonicalizer":
    return sizes.canon_batch, [sizes.canon_size, sizes.canon_size, 3]
  if row == "pointcloud":
    return sizes.cloud_batch, [sizes.num_points, 3]
  batch = sizes.train_batch if row == "train_step" else sizes.infer_batch
  return batch, [sizes.image_size, sizes.image_size, 3]


def run_row(row: str, sizes: Sizes, reference: _Torch | None, device: str,
            peak_flops: float | None, reference_missing: str | None = None
            ) -> dict[str, Any]:
  """Measures one row; returns its JSON record.

  ``reference_missing`` says why ``reference`` is None (recorded in the row).
  """
  builders, missing = _row_builders(row, sizes, reference, reference_missing)
  stats = measure(builders, sizes, device)
  batch, shape = _batch_and_shape(row, sizes)
  title = TITLES[row].format(predictor=sizes.predictor)
  if row in PREDICTOR_DTYPE_ROWS and sizes.predictor_dtype != "float32":
    title += f" ({sizes.predictor_dtype} predictor)"
  record = {
      "name": row, "title": title,
      "batch": batch, "input_shape": shape,
      "canon_jax": stats["canon_jax"], "baseline": stats.get("baseline"),
      "baseline_missing": None if "baseline" in stats else missing,
      "speedup": None, "extra": {},
  }
  if record["baseline"] is not None:
    record["speedup"] = record["baseline"]["median_s"] / record["canon_jax"]["median_s"]
  for side in ("canon_jax", "baseline"):
    if f"{side}_predictor" in stats and stats.get(side) is not None:
      pred = stats[f"{side}_predictor"]
      record["extra"][f"{side}_predictor_only"] = pred
      # How much the canonicalizer adds to the predictor's step.
      record["extra"][f"{side}_canonicalizer_overhead"] = (
          stats[side]["median_s"] / pred["median_s"] - 1.0)
  if peak_flops is not None:
    for s in stats.values():
      if s["flops"]:
        s["achieved_flops_per_s"] = s["flops"] / s["median_s"]
        s["mfu"] = s["achieved_flops_per_s"] / peak_flops
  return record


# ---------------------------------------------------------------------------------
# Profile: where the canon_jax C8 train step spends its time
# ---------------------------------------------------------------------------------


def profile_breakdown(sizes: Sizes, device: str = "cpu") -> dict[str, float]:
  """Median seconds of the parts of the C8 + predictor train step (canon_jax only).

  ``full`` (straight-through, |G| weighted copies of the input), ``hard_transform``
  (the same step canonicalizing with the argmax element only), ``predictor_only``,
  and micro-benchmarks at the row-2 batch: the weighted transform's forward +
  gradient w.r.t. the weights, the single per-sample transform, the canonicalizer
  (crop, resize, mask, network) forward + backward, and the preprocessing alone.
  """
  images, _ = make_images(sizes.train_batch, sizes.image_size)
  x = jnp.asarray(images)
  group = canon_jax.from_name(GROUP)
  canon, _ = _image_models(sizes)
  cparams = canon.init(jax.random.key(0), x)["params"]
  w = jax.nn.one_hot(jnp.arange(sizes.train_batch) % group.order, group.order)
  ct = jnp.asarray(make_images(sizes.train_batch, sizes.image_size, seed=1)[0])
  elements = jnp.arange(sizes.train_batch, dtype=jnp.int32) % group.order

  def weighted(w, x):   # d/dw <ct, sum_g w_g g.x>: what the straight-through costs
    return jax.value_and_grad(lambda w: jnp.sum(
        canon_jax.transform_images_weighted(x, group, w) * ct))(w)

  def canon_fwd_bwd(p, x):
    return jax.value_and_grad(lambda p: canon_jax.prior_loss(
        canon.apply({"params": p}, x, train=True).logits))(p)

  builders = {
      "full": lambda: jax_train_step_case(sizes),
      "hard_transform": lambda: jax_train_step_case(sizes, straight_through=False),
      "predictor_only": lambda: jax_train_step_case(sizes, canonicalize=False),
      "weighted_transform_fwd_bwd": lambda: jax_case("w", weighted, (w, x), 1),
      "single_transform_fwd": lambda: jax_case(
          "s", lambda x, e: canon_jax.transform_images(x, group, e), (x, elements), 1),
      "canonicalizer_net_fwd_bwd": lambda: jax_case("c", canon_fwd_bwd, (cparams, x), 1),
      "preprocess_fwd": lambda: jax_case(
          "p", lambda x: canon.apply({"params": cparams}, x, method="preprocess"),
          (x,), 1),
  }
  stats = measure(builders, sizes, device)
  return {key: s["median_s"] for key, s in stats.items()}


# ---------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------


def _fmt(value, spec: str, scale: float = 1.0) -> str:
  return "-" if value is None else format(value * scale, spec)


def format_table(result: dict[str, Any]) -> str:
  """Markdown table of the rows (times in ms, memory in MB)."""
  lines = [
      "| row | batch | canon_jax ms | ex/s | compile s | mem MB | baseline | "
      "baseline ms | ex/s | mem MB | speedup |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in result["rows"]:
    c, b = r["canon_jax"], r["baseline"] or {}
    lines.append(
        f"| {r['title']} | {r['batch']} | {_fmt(c['median_s'], '.1f', 1e3)} | "
        f"{_fmt(c['throughput'], '.1f')} | {_fmt(c['compile_s'], '.1f')} | "
        f"{_fmt(c['peak_memory_mb'], '.0f')} | "
        f"{b.get('label', r['baseline_missing'] or '-')} | "
        f"{_fmt(b.get('median_s'), '.1f', 1e3)} | {_fmt(b.get('throughput'), '.1f')} | "
        f"{_fmt(b.get('peak_memory_mb'), '.0f')} | "
        f"{_fmt(r['speedup'], '.2f')}{'x' if r['speedup'] else ''} |")
  extras = []
  for r in result["rows"]:
    for key, value in r["extra"].items():
      if key.endswith("overhead"):
        extras.append(f"{r['name']}: {key} = {value * 100:+.1f}% of the predictor's step")
    for side in ("canon_jax", "baseline"):
      s = r.get(side) or {}
      if s.get("flops") and result["peak_matmul_flops_per_s"] is not None:
        mfu = f", MFU {s['mfu'] * 100:.1f}%" if s.get("mfu") is not None else ""
        extras.append(f"{r['name']}: {side} {s['flops'] / 1e9:.1f} GFLOP/step"
                      f"{', %.1f GFLOP/s' % (s['achieved_flops_per_s'] / 1e9) if s.get('achieved_flops_per_s') else ''}{mfu}")
  if extras:
    lines += [""] + [f"- {e}" for e in extras]
  return "\n".join(lines)


def run(mode: str = "quick", rows: tuple[str, ...] = ROWS, *, reference: bool = True,
        device: str = "cpu", flops: bool = False, threads: int | None = None,
        profile: bool = False, iters: int | None = None, warmup: int | None = None,
        batch: int | None = None, malloc: str = "retain", dtype: str = "float32",
        log: Callable[[str], None] = print, command: str | None = None
        ) -> dict[str, Any]:
  """Runs the benchmark; returns the JSON-able result (see the module docstring).

  Args:
    mode: "full", "quick" or "tiny" (:data:`MODES`).
    rows: names from :data:`ROWS`.
    reference: also run equiadapt (when installed).
    device: "cpu" or "gpu" (JAX's device; GPU also reports FLOPs and MFU).
    flops: report XLA FLOPs per step and MFU against a measured matmul peak.
    threads: cores for both frameworks (default: all this process may use).
    profile: add :func:`profile_breakdown` under ``"profile"``.
    iters, warmup: override the mode's timed / warm-up steps.
    batch: override every row's batch size (between --quick and the full sizes).
    malloc: "retain" (:func:`train.host_memory.retain_freed_memory`: freed blocks
      are reused, not unmapped and faulted in again every step; both libraries
      share the process, so both get it) or "default" (glibc as configured). Applied
      here before JAX's backend and torch start; it takes full effect only if no
      earlier code in the process started them.
    dtype: compute dtype of the image predictor in rows ``train_step`` and
      ``inference`` (:data:`DTYPES`; see the module docstring).
    log: progress messages.
    command: how the run was started, for the record (default: this call).
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {sorted(MODES)}; got {mode!r}.")
  unknown = [r for r in rows if r not in ROWS]
  if unknown:
    raise ValueError(f"rows must be among {ROWS}; got unknown {unknown}.")
  if device not in ("cpu", "gpu"):
    raise ValueError(f"device must be 'cpu' or 'gpu'; got {device!r}.")
  if malloc not in ("retain", "default"):
    raise ValueError(f"malloc must be 'retain' or 'default'; got {malloc!r}.")
  if dtype not in DTYPES:
    raise ValueError(f"dtype must be one of {DTYPES}; got {dtype!r}.")
  if malloc == "retain":
    host_memory.retain_freed_memory()
  threads = configure_threads(threads)
  if jax.default_backend() != device:
    raise RuntimeError(f"--device {device} but JAX's default backend is "
                       f"{jax.default_backend()!r} (set JAX_PLATFORMS={device}).")
  sizes = dataclasses.replace(MODES[mode], predictor_dtype=dtype)
  if batch is not None:
    if batch < 1:
      raise ValueError(f"batch must be >= 1; got {batch}.")
    sizes = dataclasses.replace(sizes, canon_batch=batch, train_batch=batch,
                                cloud_batch=batch, infer_batch=batch)
  if iters is not None or warmup is not None:
    sizes = dataclasses.replace(sizes, iters=iters or sizes.iters,
                                warmup=sizes.warmup if warmup is None else warmup)
  torch_ref, missing = None, "not requested (--no-reference)"
  if reference and any(r != "inference" for r in rows):
    try:
      torch_ref, missing = _Torch(threads, device), None
    except ImportError as err:
      log(str(err))
      missing = ("equiadapt not installed (bench extra)"
                 if str(err).startswith(BENCH_EXTRA_HINT) else str(err))
  peak, peak_dtype = (peak_matmul_flops(device) if (flops or device == "gpu")
                      else (None, None))
  result = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "command": command or f"train.benchmark.run({mode!r}, {rows!r})",
      "mode": mode, "device": device, "sizes": dataclasses.asdict(sizes),
      "machine": {**machine_info(threads),
                  "malloc": "retain" if host_memory.is_retaining() else "default"},
      "peak_matmul_flops_per_s": peak,
      "peak_matmul_dtype": peak_dtype,
      "rows": [],
  }
  for row in rows:
    start = time.perf_counter()
    result["rows"].append(run_row(row, sizes, torch_ref, device, peak, missing))
    log(f"[{row}] {time.perf_counter() - start:.0f} s")
  if profile:
    result["profile"] = profile_breakdown(sizes, device)
  result["machine"]["load_average_end"] = list(os.getloadavg())
  return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  size = parser.add_mutually_exclusive_group()
  size.add_argument("--quick", action="store_true", help="small batches (< 5 min on 2 cores)")
  size.add_argument("--tiny", action="store_true", help="test-sized models (seconds)")
  parser.add_argument("--rows", default=",".join(ROWS),
                      help=f"comma-separated subset of {','.join(ROWS)}")
  parser.add_argument("--out", help="write the JSON result here")
  parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
  parser.add_argument("--flops", action="store_true", help="XLA FLOPs per step and MFU")
  parser.add_argument("--threads", type=int, help="cores for both frameworks")
  parser.add_argument("--no-reference", action="store_true", help="canon_jax rows only")
  parser.add_argument("--profile", action="store_true",
                      help="time the parts of the canon_jax C8 train step")
  parser.add_argument("--iters", type=int, help="timed steps per side")
  parser.add_argument("--warmup", type=int, help="untimed steps per side after compiling")
  parser.add_argument("--batch", type=int, help="batch size of every row (overrides the mode's)")
  parser.add_argument("--malloc", choices=("retain", "default"), default="retain",
                      help="reuse freed host memory (glibc; default) or not")
  parser.add_argument("--dtype", choices=DTYPES, default="float32",
                      help="compute dtype of the image predictor (rows train_step, "
                           "inference); bfloat16: mixed precision on both sides")
  args = parser.parse_args(argv)
  mode = "quick" if args.quick else "tiny" if args.tiny else "full"
  result = run(mode, tuple(r for r in args.rows.split(",") if r),
               reference=not args.no_reference, device=args.device, flops=args.flops,
               threads=args.threads, profile=args.profile, iters=args.iters,
               warmup=args.warmup, batch=args.batch, malloc=args.malloc,
               dtype=args.dtype, log=lambda m: print(m, file=sys.stderr, flush=True),
               command=" ".join(["python -m train.benchmark"]
                                + (sys.argv[1:] if argv is None else argv)))
  m = result["machine"]
  print(f"\n{result['date']}  {result['command']}\n{m['cpu']}, {m['cores']} cores "
        f"({m['threads']} used), load {m['load_average'][0]:.1f} -> "
        f"{m['load_average_end'][0]:.1f}, malloc {m['malloc']}; jax "
        f"{m['versions']['jax']}, torch {m['versions']['torch']}, equiadapt "
        f"{m['versions']['equiadapt']}\n")
  print(format_table(result))
  if "profile" in result:
    print("\nprofile (median s): " + ", ".join(
        f"{k} {v:.4f}" for k, v in result["profile"].items()))
  if args.out:
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
  return result


if __name__ == "__main__":
  main()
