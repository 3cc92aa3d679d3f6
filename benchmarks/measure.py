"""Timing and memory of prepared steps: the method shared by both libraries' rows.

* :class:`Case`: one prepared step (a compiled JAX executable or a torch closure);
  :func:`jax_case` compiles a function once (timed) and wraps it.
* :func:`measure`: prepares the cases one after another (warm-up steps, peak memory),
  then times them in the order of :func:`schedule`; medians and quartiles.
* Threads (:func:`configure_threads`), machine description (:func:`machine_info`),
  resident memory sampling and the matmul peak behind MFU (:func:`peak_matmul_flops`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.metadata
import os
import platform
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp

from benchmarks import host_memory
from benchmarks.workload import Sizes


def configure_threads(threads: int | None) -> int:
  """Pins the process to ``threads`` cores (default: all allowed) for XLA and torch.

  Every existing thread is pinned (XLA's pool may already exist) and new threads
  inherit the mask. Returns the number of cores used. torch's intra-op threads are
  set when torch is imported (:func:`benchmarks.reference.import_reference`).
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


def version(package: str) -> str | None:
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
      "versions": {p: version(p) for p in packages},
  }


_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
  """Resident set size of this process in bytes."""
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * _PAGE


def trim() -> None:
  """Collects garbage and returns freed heap pages to the OS (glibc only)."""
  gc.collect()
  host_memory.release_freed_memory()


class _PeakRss:
  """Samples the RSS every ``interval`` seconds in a thread; ``peak`` in bytes."""

  def __init__(self, interval: float = 0.002):
    self.interval = interval
    self.peak = rss()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, rss())
      self._stop.wait(self.interval)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, rss())


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


def _prepare(build: Callable[[], Case], warmup: int, device: str
             ) -> tuple[Case, int | None, str]:
  """Builds a case and runs its warm-up steps.

  Returns the case, its peak memory in bytes and how that was measured (see the
  module docstring).
  """
  trim()
  base = rss()
  case = build()
  trim()
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
  its first case: at the full sizes a JAX step right after a torch step was 8-17%
  slower than the same step after a JAX step, which biased whichever case followed
  the other library.
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
  trim()
  return stats


def peak_matmul_flops(device: str) -> tuple[float, str]:
  """Measured matmul FLOP/s on JAX's default device (the MFU denominator).

  bf16 8192^2 on GPU; float32 1024^2 on CPU, where XLA's bf16 matmul is no faster
  than its float32 one, so float32 is the peak there also with ``--dtype bfloat16``.
  Random operands: a GPU multiplies constant matrices faster than random ones, which
  would understate the MFU. Returns (FLOP/s, dtype name).
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
