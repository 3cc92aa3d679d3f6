"""Speed benchmark: canon_jax against the PyTorch reference equiadapt 0.1.2.

Both libraries run on the same machine, in the same process, on the same numpy
inputs (converted to jax / torch arrays), with the same architectures and losses::

  python -m benchmarks.benchmark --quick --out quick.json   # < 5 min on 2 CPU cores
  python -m benchmarks.benchmark --out full.json            # realistic batch sizes
  python -m benchmarks.benchmark --quick --flops --profile  # + XLA FLOPs, step breakdown
  python -m benchmarks.benchmark --device gpu --out gpu.json  # GPU, FLOPs and MFU
  python -m benchmarks.benchmark --quick --batch 8 --rows train_step  # another batch
  python -m benchmarks.benchmark --quick --dtype bfloat16 --rows train_step,inference

Rows (``--rows`` selects some):

* ``canonicalizer``: C8 rotated-filter group-conv net (lift 5x5, 32 channels,
  3 layers) forward + backward of the prior loss on (B, 96, 96, 3) images
  (equiadapt ``CustomEquivariantNetwork`` vs :class:`canon_jax.nn.GroupConvNet`).
* ``train_step``: C8 canonicalizer + ResNet50 on (B, 224, 224, 3), forward,
  backward and SGD (momentum 0.9) update of ``CE + 100 * prior`` (equiadapt
  ``GroupEquivariantImageCanonicalization`` + torchvision ``resnet50`` vs
  :class:`canon_jax.CanonicalizedModel` of :class:`canon_jax.ImageCanonicalizer` and
  ``canon_jax.models.ResNet50``, one jitted step). The predictor alone is timed too,
  for the canonicalizer's overhead.
* ``pointcloud``: Vector Neuron canonicalizer (k = 20) + PointNet, (B, 1024, 3),
  forward + backward of ``CE + rotation prior`` (equiadapt ``VNSmall`` +
  ``EquivariantPointcloudCanonicalization`` + a torch PointNet written here with
  canon_jax's layout vs a :class:`canon_jax.CanonicalizedModel` of
  ``PointCloudCanonicalizer(network="vn")`` and ``canon_jax.models.PointNet``).
* ``inference``: canonicalize-then-predict vs averaging the predictor over all 8
  rotations (both canon_jax, the same ResNet50): the baseline is the averaging.

``--dtype bfloat16`` runs the image predictor (ResNet50; rows ``train_step`` and
``inference``) in mixed precision on both sides: canon_jax's ``dtype=bfloat16``
(bfloat16 activations and matmuls, float32 parameters, batch statistics and loss),
torch's ``autocast`` to bfloat16 around the predictor's forward. The canonicalizers,
their priors and the other rows stay float32.

Per row and side: median step time after warm-up (JAX compile time separately),
throughput, peak memory, and ``speedup`` = baseline median / canon_jax median.

Method (also in ``benchmarks/BENCHMARKS.md``; code in :mod:`benchmarks.measure`):

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
* Host memory (``--malloc retain``, off by default): glibc is told to reuse freed
  blocks (:mod:`benchmarks.host_memory`) instead of unmapping XLA's per-step
  temporary buffer and faulting it in again every step; both libraries share the
  process, so both get it.
* FLOPs (``--flops``, always on GPU): XLA's ``cost_analysis()`` of the compiled
  step; MFU = FLOPs / median time / the measured peak of a matmul (bf16 on GPU,
  float32 on CPU).

Modules: :mod:`benchmarks.workload` (sizes, inputs), :mod:`benchmarks.jax_side`,
:mod:`benchmarks.reference` (the torch side), :mod:`benchmarks.measure` (timing,
memory); this one assembles the rows and prints the report.

The reference is imported lazily: without the ``bench`` extra (equiadapt 0.1.2,
e2cnn, kornia, hydra-core, torch, torchvision) only the canon_jax rows run.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax

from benchmarks import host_memory, jax_side
from benchmarks.measure import (Case, configure_threads, machine_info, measure,
                                peak_matmul_flops, schedule)
from benchmarks.reference import BENCH_EXTRA_HINT, Reference
from benchmarks.workload import (DTYPES, MODES, PREDICTOR_DTYPE_ROWS, ROWS, Sizes,
                                 make_clouds, make_images)

__all__ = ["BENCH_EXTRA_HINT", "DTYPES", "MODES", "ROWS", "Case", "Sizes", "format_table",
           "main", "make_clouds", "make_images", "run", "run_row", "schedule"]


# ---------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------


TITLES = {
    "canonicalizer": "C8 group-conv canonicalizer fwd+bwd",
    "train_step": "C8 canonicalizer + {predictor} SGD train step",
    "pointcloud": "VN canonicalizer + PointNet fwd+bwd",
    "inference": "canonicalize+predict vs 8-way averaging",
}


def _row_builders(row: str, sizes: Sizes, reference: Reference | None, missing: str | None
                  ) -> tuple[dict[str, Callable[[], Case]], str | None]:
  """The cases of ``row``: keys "canon_jax", "baseline" and extras; and why the
  baseline is missing (or None). ``missing`` says why ``reference`` is None."""
  if row == "canonicalizer":
    builders = {"canon_jax": lambda: jax_side.canonicalizer_case(sizes)}
    if reference is not None:
      builders["baseline"] = lambda: reference.canonicalizer_case(sizes)
  elif row == "train_step":
    builders = {"canon_jax": lambda: jax_side.train_step_case(sizes),
                "canon_jax_predictor": lambda: jax_side.train_step_case(sizes, False)}
    if reference is not None and sizes.predictor == "resnet50":
      builders["baseline"] = lambda: reference.train_step_case(sizes)
      builders["baseline_predictor"] = lambda: reference.train_step_case(sizes, False)
    elif reference is not None:
      missing = f"torchvision has no {sizes.predictor!r}"
  elif row == "pointcloud":
    builders = {"canon_jax": lambda: jax_side.pointcloud_case(sizes),
                "canon_jax_predictor": lambda: jax_side.pointcloud_case(sizes, False)}
    if reference is not None:
      builders["baseline"] = lambda: reference.pointcloud_case(sizes)
      builders["baseline_predictor"] = lambda: reference.pointcloud_case(sizes, False)
  elif row == "inference":
    builders = {"canon_jax": lambda: jax_side.inference_case(sizes, "canonicalize"),
                "baseline": lambda: jax_side.inference_case(sizes, "average"),
                "canon_jax_predictor": lambda: jax_side.inference_case(sizes, "predictor")}
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


def run_row(row: str, sizes: Sizes, reference: Reference | None, device: str,
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
        batch: int | None = None, malloc: str = "default", dtype: str = "float32",
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
    malloc: "default" (glibc as configured) or "retain"
      (:func:`benchmarks.host_memory.retain_freed_memory`: freed blocks are reused,
      not unmapped and faulted in again every step; both libraries share the
      process, so both get it). Applied
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
      torch_ref, missing = Reference(threads, device), None
    except ImportError as err:
      log(str(err))
      missing = ("equiadapt not installed (bench extra)"
                 if str(err).startswith(BENCH_EXTRA_HINT) else str(err))
  peak, peak_dtype = (peak_matmul_flops(device) if (flops or device == "gpu")
                      else (None, None))
  result = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "command": command or f"benchmarks.benchmark.run({mode!r}, {rows!r})",
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
    result["profile"] = jax_side.profile_breakdown(sizes, device)
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
  parser.add_argument("--malloc", choices=("default", "retain"), default="default",
                      help="retain: glibc reuses freed host memory instead of "
                           "returning it to the OS (opt-in)")
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
               command=" ".join(["python -m benchmarks.benchmark"]
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
