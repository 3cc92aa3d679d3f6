"""Training and evaluation of canonicalized predictors (``python -m train``).

``train_and_evaluate(config, workdir)`` trains the config's variants (vanilla,
augmentation and canonicalized predictors), evaluates them on every pose of the test
set and writes ``WORKDIR/eval.json``, ``metrics.jsonl``, TensorBoard events and
plots; images under a discrete group or point clouds under 3D rotations
(``config.task``, :mod:`train.tasks`). Configs live in ``train/configs/``.
Promptable segmentation (SAM + a prior-trained canonicalizer, COCO mAP) runs through
``python -m train.segment`` (:mod:`train.segment`). Benchmarks live in the
repository's ``benchmarks/`` folder (not installed).
"""
from canon_jax import _lazy

# Loaded on first use, so that importing one module of train/ imports neither the
# data stack (TFDS, grain) nor ml_collections.
__all__ = ["train_and_evaluate", "validate_config"]
__getattr__, __dir__ = _lazy.attach(
    __name__, {"train_and_evaluate": ".trainer", "validate_config": ".config_checks"})
