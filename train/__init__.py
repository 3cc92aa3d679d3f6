"""Training and evaluation of canonicalized predictors (``python -m train``).

``train_and_evaluate(config, workdir)`` trains the config's variants (vanilla,
augmentation and canonicalized predictors), evaluates them on every pose of the test
set and writes ``WORKDIR/eval.json``, ``metrics.jsonl``, TensorBoard events and
plots; images under a discrete group or point clouds under 3D rotations
(``config.task``, :mod:`train.tasks`). Configs live in ``train/configs/``.
Promptable segmentation (SAM + a prior-trained canonicalizer, COCO mAP) runs through
``python -m train.segment`` (:mod:`train.segment`); benchmarks through
``python -m train.benchmark``.
"""
from train.config_checks import validate_config
from train.trainer import train_and_evaluate

__all__ = ["train_and_evaluate", "validate_config"]
