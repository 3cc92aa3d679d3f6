"""Training and evaluation of canonicalized predictors (``python -m train``).

``train_and_evaluate(config, workdir)`` trains the config's variants (vanilla,
augmentation and canonicalized predictors), evaluates them on every pose of the test
set and writes ``WORKDIR/eval.json``, ``metrics.jsonl``, TensorBoard events and
plots; images under a discrete group or point clouds under 3D rotations
(``config.task``, :mod:`train.tasks`). Configs live in ``train/configs/``.
Promptable segmentation (SAM + a prior-trained canonicalizer, COCO mAP) runs through
``python -m train.segment`` (:mod:`train.segment`). Benchmarks live in the repository's ``benchmarks/`` folder.
"""
import importlib

# Loaded on first use, so that ``import train`` (as ``python -m benchmarks.benchmark``
# does) imports neither the data stack (TFDS, grain) nor ml_collections.
_MODULE_OF = {"train_and_evaluate": "trainer", "validate_config": "config_checks"}

__all__ = ["train_and_evaluate", "validate_config"]


def __getattr__(name: str):
  module = _MODULE_OF.get(name)
  if module is None:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
  globals()[name] = value
  return value
