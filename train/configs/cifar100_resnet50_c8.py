r"""CIFAR-100, ImageNet-pretrained ResNet50, C8: cifar10_resnet50_c8 on CIFAR-100.

Same three variants, recipe and canonicalizer as ``cifar10_resnet50_c8``; 100
classes (the ResNet50 head is re-initialised for them).

Needs the converted ResNet50 (see cifar10_resnet50_c8) and TFDS ``cifar100``
prepared as array_record in DATA_DIR. Command (an accelerator):

  python -m train --config train/configs/cifar100_resnet50_c8.py \
      --workdir runs/cifar100_resnet50_c8 --config.data.data_dir=DATA_DIR

Expected result: the paper's Table 1 reports, for CIFAR-100, a vanilla ResNet50 whose
C8-averaged accuracy collapses and a prior-regularised canonicalizer within about a
point of its upright accuracy (quote the paper's numbers after checking them; not
reproduced here).
"""
from train.configs import cifar10_resnet50_c8 as base


def get_config():
  config = base.get_config()
  config.data.name = "cifar100"
  return config
