r"""COCO 2017, SAM (ViT-H) + C4 canonicalizer trained with the prior only (the paper's Table 3).

Mondal et al. 2023 make SAM C4-equivariant without touching it: a group-equivariant
wide ResNet (C4, kernel 9, 64 channels, 12 layers, input cropped 0.8 and resized to
128) is trained on COCO 2017 train images with the identity prior only (task-loss
weight 0, prior weight 100: upright photos should map to element 0), and SAM,
prompted with the ground-truth boxes moved into the canonical frame, predicts masks
that are mapped back (:mod:`canon_jax.segmentation`). Evaluation: mask AP on val2017
at every rotation by 90 degrees and its mean, the C4-averaged mAP
(:func:`canon_jax.coco_eval.group_averaged_map`). Optimiser as equiadapt's: SGD,
momentum 0.9, weight decay 5e-4, lr 1e-3 (x0.1 after epoch 2), 10 epochs, batch 128.

Expected result (paper, as reported; mAP / C4-averaged mAP): SAM 62.34 / 58.78;
SAM + canonicalizer 62.13 / 62.13. Not reproduced on this project's machines.

Not wired into ``python -m train`` (its trainer is image classification). How it runs:

* Prepare, on a machine with network (copy DATA_DIR and the files over afterwards)::

    tfds.builder("coco/2017", data_dir=DATA_DIR).download_and_prepare(
        file_format="array_record")          # then tfds.data_source("coco/2017", ...)
    python -m canon_jax.models.sam_convert --variant vit_h \
        --weights sam_vit_h_4b8939.pth --out pretrained/sam_vit_h
    # and annotations/instances_val2017.json from cocodataset.org: TFDS's coco/2017
    # holds boxes and labels but no instance masks, which mask AP needs.

* Training needs no SAM forward pass with ``task_weight == 0``: each step draws
  ``batch_size`` train images from ``tfds.data_source("coco/2017", split="train",
  data_dir=DATA_DIR)``, resizes them to ``data.image_size`` (longest side, zero
  padding; :func:`canon_jax.models.sam.resize_longest_side` on [0, 1] pixels) and
  minimises ``prior_weight * canon_jax.prior_loss(result.logits)`` with
  ``result, stats = canon.apply(variables, images, train=True,
  mutable=["batch_stats"])``, ``canon = segmentation_canonicalizer(**canonicalizer)``.
  With ``task_weight > 0`` add SAM's mask loss on
  ``segmentation.segment(sam.box_predictor(module, variables), result, boxes)``
  (the straight-through weights carry its gradient to the canonicalizer).
* Evaluation, per val batch of images and ground-truth
  :class:`~canon_jax.segmentation.Instances` (boxes, masks, labels from the
  annotation file)::

    predict = sam.box_predictor(*sam_convert.load_sam(config.predictor.checkpoint))
    segment_fn = lambda images, truth: segmentation.as_predictions(
        segmentation.segment_images(canon, canon_variables, predict, images,
                                    truth.boxes), truth)
    coco_eval.group_averaged_map(segment_fn, batches, config.group)

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
      name="sam_vit_h",
      checkpoint="pretrained/sam_vit_h",  # python -m canon_jax.models.sam_convert --out ...
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
  return config
