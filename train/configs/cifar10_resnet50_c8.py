r"""CIFAR-10, ImageNet-pretrained ResNet50, C8 (the paper's Table 1; base of the paper configs).

Mondal et al. 2023 fine-tune an ImageNet ResNet50 on CIFAR-10 three ways and evaluate
each on the test set as is and in all 8 rotations by multiples of 45 degrees:
plain fine-tuning (``vanilla``), fine-tuning on C8-rotated images
(``augmentation``), and a C8 canonicalizer (kernel 5, 32 channels, 3 layers, input
cropped 0.8 and resized to 96) learned jointly with the fine-tuned ResNet50 with the
identity prior (weight 100) (``canonicalized``). Inputs are upsampled to 224 x 224
(as equiadapt does) and normalised with the checkpoint's ImageNet statistics.
Optimiser as equiadapt's ResNet recipe: SGD, momentum 0.9, weight decay 5e-4, lr
1e-3 for both networks, x0.1 at 1/3 and 1/2 of 100 epochs, batch 128.

Needs (on a machine with network; no weights can be downloaded here):

  python -m canon_jax.convert --arch resnet50 --source torchvision \
      --out pretrained/resnet50_torchvision
  tfds.builder("cifar10", data_dir=DATA_DIR).download_and_prepare(
      file_format="array_record")

Command (an accelerator; ~39k steps per variant):

  python -m train --config train/configs/cifar10_resnet50_c8.py \
      --workdir runs/cifar10_resnet50_c8 --config.data.data_dir=DATA_DIR

Expected result (paper, as reported; accuracy / C8-averaged accuracy, %): vanilla
96.97 / 57.77; C8 augmentation 94.91 / 90.11; prior-regularised canonicalization
96.19 / 95.31. Not reproduced on this project's CPU-only machines.
"""
import ml_collections

from train.configs import digits_c8
from train.configs.common import stage

EPOCHS = 100
TRAIN_EXAMPLES = 50_000
BATCH_SIZE = 128


def paper_stage(num_steps: int, **overrides) -> ml_collections.ConfigDict:
  """equiadapt's ResNet recipe: SGD(0.9), wd 5e-4, lr 1e-3, multistep decay."""
  fields = dict(init="pretrained", num_steps=num_steps, optimizer="sgd",
                predictor_lr=1e-3, canonicalizer_lr=1e-3, momentum=0.9,
                weight_decay=5e-4, schedule="multistep")
  fields.update(overrides)
  return stage(**fields)


def set_stages(config: ml_collections.ConfigDict, num_steps: int, **overrides) -> None:
  """The three paper variants, all fine-tuned from the pretrained checkpoint."""
  config.vanilla = paper_stage(num_steps, **overrides)
  config.augmentation = paper_stage(num_steps, **overrides)
  config.canonicalized = paper_stage(num_steps, prior_weight=100.0, **overrides)


def get_config() -> ml_collections.ConfigDict:
  config = digits_c8.get_config()
  config.batch_size = BATCH_SIZE
  config.eval_batch_size = 64  # x8 poses per forward pass

  config.data.name = "cifar10"
  config.data.image_size = 224  # upsampled on the host, before canonicalization

  config.model.name = "resnet50"
  config.model.kwargs = ml_collections.ConfigDict()
  config.model.pretrained = "pretrained/resnet50_torchvision"
  config.model.normalize = "auto"  # the checkpoint's mean/std (ImageNet)

  config.canonicalizer.network = "gcnn"
  config.canonicalizer.features = 32
  config.canonicalizer.kernel_size = 5
  config.canonicalizer.num_layers = 3
  config.canonicalizer.input_crop_ratio = 0.8
  config.canonicalizer.resize = 96

  set_stages(config, EPOCHS * TRAIN_EXAMPLES // BATCH_SIZE)
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1000
  config.num_visualize = 4
  return config
