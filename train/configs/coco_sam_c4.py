r"""COCO 2017, SAM (ViT-H) + C4 canonicalizer trained with the prior only (the paper's Table 3).

Mondal et al. 2023 make SAM C4-equivariant without touching it: a group-equivariant
wide ResNet (C4, kernel 9, 64 channels, 12 layers, input cropped 0.8 and resized to
128) is trained on COCO 2017 train images with the identity prior only (task-loss
weight 0, prior weight 100: upright photos should map to element 0), and SAM,
prompted with the ground-truth boxes moved into the canonical frame, predicts masks
that are mapped back (:mod:`canon_jax.segmentation`). Evaluation: mask AP on val2017
at every rotation by 90 degrees and its mean, the C4-averaged mAP
(:func:`canon_jax.coco_eval.group_averaged_map`), scored as COCO's official
evaluation does: in the original image coordinates (masks and boxes predicted on the
1024 x 1024 input are un-padded and resized back), crowd regions as ignore regions.
Optimiser as equiadapt's: SGD, momentum 0.9, weight decay 5e-4, lr 1e-3 (x0.1 after
epoch 2), 10 epochs, batch 128.

Expected result (paper, as reported; mAP / C4-averaged mAP): SAM 62.34 / 58.78;
SAM + canonicalizer 62.13 / 62.13. Not reproduced on this project's machines.

Command (trains the canonicalizer, then scores SAM with and without it; see
:mod:`train.segment`)::

  python -m train.segment --config train/configs/coco_sam_c4.py --workdir runs/coco \
    --config.data.data_dir=$DATA \
    --config.data.val_annotations=$COCO/annotations/instances_val2017.json \
    --config.data.val_images=$COCO/val2017 --config.predictor.checkpoint=pretrained/sam_vit_h

Prepare, on a machine with network (then copy DATA and the files over; TFDS's coco
builder needs TensorFlow to prepare the data, the run reads the prepared files
without it)::

  tfds.builder("coco/2017", data_dir=DATA).download_and_prepare(file_format="array_record")
  python -m canon_jax.convert --arch sam_vit_h --source segment_anything \
      --weights sam_vit_h_4b8939.pth --out pretrained/sam_vit_h
  # and annotations/instances_val2017.json + val2017/ from cocodataset.org: TFDS's
  # coco/2017 holds boxes and labels but no instance masks, which mask AP needs.

The whole path also runs here, without downloads, on generated shapes and a random
test-sized SAM (numbers meaningless, code paths real)::

  python -m train.segment --config train/configs/coco_sam_c4.py --workdir runs/seg \
    --config.data.name=synthetic_instances --config.data.image_size=64 \
    --config.predictor.name=sam_tiny_random --config.canonicalizer.features=4 \
    --config.canonicalizer.kernel_size=3 --config.canonicalizer.num_layers=4 \
    --config.canonicalizer.resize=32 --config.training.batch_size=8 \
    --config.training.num_epochs=2 --config.eval.batch_size=8

"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.group = "C4"

  config.data = ml_collections.ConfigDict(dict(
      name="coco/2017",        # tfds.data_source name
      data_dir=ml_collections.config_dict.placeholder(str),  # None: ~/tensorflow_datasets
      train_split="train",
      eval_split="validation",
      image_size=1024,         # SAM's input: longest side resized to this, zero-padded
      val_annotations=ml_collections.config_dict.placeholder(str),  # instances_val2017.json
      val_images=ml_collections.config_dict.placeholder(str),       # the val2017/ folder
      max_val_images=ml_collections.config_dict.placeholder(int),   # None: all of them
      num_train=64,            # "synthetic_instances" only: generated train / val images
      num_val=16,
  ))

  # canon_jax.segmentation.segmentation_canonicalizer(group, **canonicalizer)
  config.canonicalizer = ml_collections.ConfigDict(dict(
      network="wrn",
      features=64,
      kernel_size=9,
      num_layers=12,
      input_crop_ratio=0.8,
      resize=128,
      beta=1.0,
  ))

  config.predictor = ml_collections.ConfigDict(dict(
      name="sam_vit_h",                   # or "sam_tiny_random" (tests: random weights)
      checkpoint="pretrained/sam_vit_h",  # python -m canon_jax.convert --arch sam_vit_h
      multimask_output=False,             # the reference's SAM wrapper
      mask_threshold=0.0,
  ))

  config.training = ml_collections.ConfigDict(dict(
      num_epochs=10,
      batch_size=128,
      optimizer="sgd",
      momentum=0.9,
      weight_decay=5e-4,
      canonicalizer_lr=1e-3,
      milestones=(2,),         # epochs after which the lr is multiplied by 0.1
      task_weight=0.0,         # prior only: SAM is not run during training
      prior_weight=100.0,
  ))

  config.eval = ml_collections.ConfigDict(dict(
      batch_size=12,
      iou_types=("segm", "bbox"),
  ))
  config.log_every_steps = 10
  config.checkpoint_every_steps = 200
  config.keep_checkpoints = 2
  config.progress_bar = True
  return config
