"""What a run writes: per-step metrics, TensorBoard events, eval.json, a table, plots.

Files under WORKDIR (written by process 0 only):

* ``metrics.jsonl``: one JSON object every ``config.log_every_steps`` steps (that
  step's values), ``{"variant", "step", "loss",
  "task_loss", "prior_loss", "accuracy", "identity_rate", "grad_norm",
  "lr_canonicalizer", "lr_predictor"}``;
* ``tensorboard/<variant>/events.out.tfevents.*``: the same scalars under
  ``train/...`` and the evaluation under ``eval/...`` (tensorboardX; no TensorFlow);
* ``results/<variant>.json``: one variant's evaluation (see :mod:`train.evaluate`);
* ``eval.json``: the main variant's evaluation with the others under
  ``"baselines"``;
* ``per_element_accuracy.png``: accuracy on each group element, one line per
  variant;
* ``canonicalization.png``: test images in every pose next to their canonical
  versions (canonicalized variant).
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

import canon_jax

EVAL_KEYS = ("accuracy", "g_averaged_accuracy", "per_element_accuracy", "identity_rate",
             "invariance_rate")
"""Keys every variant's entry in eval.json has (more may follow)."""


class MetricWriter:
  """Appends step metrics to ``metrics.jsonl`` and TensorBoard (tensorboardX).

  Args:
    workdir: the run's directory.
    enabled: False on processes other than 0 (then every call does nothing).
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self._workdir = workdir
    self._enabled = enabled
    self._tb: dict[str, Any] = {}
    self.path = os.path.join(workdir, "metrics.jsonl")

  def truncate(self, keep_variants: Sequence[str], variant: str, last_step: int) -> None:
    """Drops lines a resumed run will write again, before ``variant`` trains.

    Keeps lines of ``keep_variants`` (finished before ``variant``) and lines of
    ``variant`` with ``step <= last_step`` (the restored checkpoint's step); lines of
    later variants go too (they train after this one).
    """
    if not self._enabled or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = [json.loads(line) for line in f if line.strip()]
    kept = [r for r in lines if r["variant"] in keep_variants or
            (r["variant"] == variant and r["step"] <= last_step)]
    with open(self.path, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)

  def _writer(self, variant: str):
    if variant not in self._tb:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb[variant] = SummaryWriter(os.path.join(self._workdir, "tensorboard", variant))
    return self._tb[variant]

  def write_step(self, variant: str, step: int, scalars: Mapping[str, float]) -> None:
    """One line of ``metrics.jsonl`` and ``train/<name>`` TensorBoard scalars."""
    if not self._enabled:
      return
    record = {"variant": variant, "step": int(step),
              **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    writer = self._writer(variant)
    for name, value in scalars.items():
      writer.add_scalar(f"train/{name}", float(value), int(step))

  def write_eval(self, variant: str, step: int, results: Mapping[str, Any]) -> None:
    """``eval/<name>`` TensorBoard scalars: every number of ``results``, and every
    list of floats (per-element accuracies, ...) as ``eval/<name>/<index>``."""
    if not self._enabled:
      return
    writer = self._writer(variant)
    for key, value in results.items():
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        writer.add_scalar(f"eval/{key}", float(value), int(step))
      elif isinstance(value, list) and all(isinstance(v, float) for v in value):
        for g, v in enumerate(value):
          writer.add_scalar(f"eval/{key}/{g}", v, int(step))
    writer.flush()

  def close(self) -> None:
    for writer in self._tb.values():
      writer.close()
    self._tb = {}


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as indented JSON, atomically (temporary file, then rename)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def eval_summary(results: Mapping[str, Mapping[str, Any]], main: str) -> dict[str, Any]:
  """The eval.json object: ``results[main]`` with the others under ``"baselines"``."""
  summary = dict(results[main])
  summary["variant"] = main
  baselines = {name: dict(r) for name, r in results.items() if name != main}
  if baselines:
    summary["baselines"] = baselines
  return summary


Column = tuple[str, int, Callable[[Mapping[str, Any]], float], str]
"""A table column: (title, width, value of a variant's results, format spec)."""


def table(results: Mapping[str, Mapping[str, Any]], columns: Sequence[Column]) -> str:
  """A plain-text table: one row per variant, one column per ``columns`` entry."""
  header = f"{'variant':<15}" + "".join(f"{t:>{w}}" for t, w, _, _ in columns)
  rows = [header, "-" * len(header)]
  for name, r in results.items():
    rows.append(f"{name:<15}" + "".join(f"{fn(r):>{w}{spec}}" for _, w, fn, spec in columns))
  return "\n".join(rows)


def percent(key: str) -> Callable[[Mapping[str, Any]], float]:
  """A column value: ``100 * results[key]``."""
  return lambda r: 100 * r[key]


def format_table(results: Mapping[str, Mapping[str, Any]], group_name: str) -> str:
  """The classification table: accuracies in percent, per variant."""
  return table(results, [
      ("accuracy", 10, percent("accuracy"), ".2f"),
      (group_name + "-avg", 10, percent("g_averaged_accuracy"), ".2f"),
      ("worst g", 10, lambda r: 100 * min(r["per_element_accuracy"]), ".2f"),
      ("invariant", 11, percent("invariance_rate"), ".2f"),
      ("identity", 10, percent("identity_rate"), ".2f")])


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def plot_per_element_accuracy(results: Mapping[str, Mapping[str, Any]],
                              labels: Sequence[str], xlabel: str, path: str) -> None:
  """PNG: accuracy (%) at each test pose (group element), one line per variant.

  Args:
    results: variant -> evaluation (``per_element_accuracy``, ``g_averaged_accuracy``).
    labels: one tick label per pose (``train.tasks`` ``pose_labels``).
    xlabel: the x axis' title.
    path: the PNG to write.
  """
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 4))
  x = np.arange(len(labels))
  for name, r in results.items():
    ax.plot(x, 100 * np.asarray(r["per_element_accuracy"]), marker="o",
            label=f"{name} ({100 * r['g_averaged_accuracy']:.1f} avg)")
  ax.set_xticks(x, labels)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("accuracy (%)")
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower left")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_canonicalization(inputs: np.ndarray, canonical: np.ndarray, elements: np.ndarray,
                          group: canon_jax.DiscreteGroup, path: str) -> None:
  """PNG grid: for each image, a row of its |G| poses and a row of their canonical forms.

  Args:
    inputs, canonical: (|G|, N, H, W, C) images in [0, 1].
    elements: (|G|, N) predicted elements (shown above the canonical images).
    group: the group.
    path: output file.
  """
  plt = _pyplot()
  order, n = inputs.shape[:2]
  fig, axes = plt.subplots(2 * n, order, figsize=(1.1 * order, 1.15 * 2 * n), squeeze=False)
  for i in range(n):
    for g in range(order):
      for row, images, title in ((2 * i, inputs, f"g={g}"),
                                 (2 * i + 1, canonical, f"→{int(elements[g, i])}")):
        ax = axes[row, g]
        img = np.clip(images[g, i], 0.0, 1.0)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=7, pad=2)
    axes[2 * i, 0].set_ylabel("input", fontsize=7)
    axes[2 * i + 1, 0].set_ylabel("canonical", fontsize=7)
  fig.suptitle(f"{group.name}: inputs (odd rows) and canonicalized (even rows)", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
