"""The segmentation system: COCO annotation reader, prior-only training, SAM scoring."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import canon_jax
from canon_jax import coco_eval, segmentation
from canon_jax.data import CocoInstances, make_synthetic_instances
from helpers import set_field
from train import segment
from train.configs import coco_sam_c4
from train.step import TrainState


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
  """Two images and a COCO instances file: a polygon rectangle and a crowd region on a
  100 x 200 image, an RLE mask on a 50 x 25 one."""
  root = tmp_path_factory.mktemp("coco")
  os.makedirs(root / "images")
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (100, 200, 3), dtype=np.uint8)).save(
      root / "images" / "a.png")
  Image.fromarray(rng.integers(0, 255, (50, 25, 3), dtype=np.uint8)).save(
      root / "images" / "b.png")
  from pycocotools import mask as mask_utils
  rle_mask = np.zeros((50, 25), np.uint8)
  rle_mask[10:30, 5:15] = 1
  rle = mask_utils.encode(np.asfortranarray(rle_mask))
  rle["counts"] = rle["counts"].decode()
  annotations = {
      "images": [{"id": 7, "file_name": "a.png", "height": 100, "width": 200},
                 {"id": 9, "file_name": "b.png", "height": 50, "width": 25}],
      "categories": [{"id": 3, "name": "thing"}, {"id": 5, "name": "other"}],
      "annotations": [
          # Rectangle x in [50, 100), y in [20, 60): polygon and bbox agree. 2000
          # pixels: "medium" here, "small" (80 pixels) on a 40 x 40 model input.
          {"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0, "area": 2000.0,
           "bbox": [50, 20, 50, 40], "segmentation": [[50, 20, 100, 20, 100, 60, 50, 60]]},
          {"id": 2, "image_id": 7, "category_id": 5, "iscrowd": 1, "area": 250.0,
           "bbox": [0, 0, 10, 25], "segmentation": [[0, 0, 10, 0, 10, 25, 0, 25]]},
          {"id": 3, "image_id": 9, "category_id": 5, "iscrowd": 0, "area": 200.0,
           "bbox": [5, 10, 10, 20], "segmentation": rle},
      ]}
  with open(root / "instances.json", "w") as f:
    json.dump(annotations, f)
  return str(root)


def test_coco_instances_resize_pad_and_keep_masks_and_boxes_aligned(coco_dir):
  ds = CocoInstances(os.path.join(coco_dir, "instances.json"),
                     os.path.join(coco_dir, "images"), image_size=40)
  assert ds.image_ids == [7, 9] and ds.max_instances == 1  # the crowd one is no prompt
  image, inst, original = ds[0]           # 100 x 200 -> 20 x 40, padded to 40 x 40
  assert image.shape == (40, 40, 3) and image.dtype == np.float32
  assert np.all(image[20:] == 0) and 0 <= image.min() and image.max() <= 1
  np.testing.assert_allclose(inst.boxes[0], [10, 4, 20, 12])
  want = np.zeros((40, 40), bool)
  want[4:12, 10:20] = True
  np.testing.assert_array_equal(inst.masks[0], want)
  assert inst.labels[0] == 3 and inst.valid[0]
  assert (original.height, original.width) == (100, 200)
  assert [a["iscrowd"] for a in original.annotations] == [0, 1]   # the crowd one is kept
  assert original.annotations[0]["bbox"] == [50, 20, 50, 40]      # original pixels
  image, inst, original = ds[1]           # 50 x 25 -> 40 x 20
  np.testing.assert_allclose(inst.boxes[0], [4, 8, 12, 24])
  assert inst.masks[0, 8:24, 4:12].all() and inst.masks[0].sum() == 16 * 8
  assert np.all(image[:, 20:] == 0)

  # The prompts are consistent with the annotations: mapped back to the original
  # images they score AP 1 there (in the 'medium' bucket for the rectangle).
  images, truth, originals = next(ds.batches(2))
  assert images.shape == (2, 40, 40, 3) and truth.masks.shape == (2, 1, 40, 40)
  evaluator = coco_eval.CocoEvaluator()
  evaluator.add_original(originals, truth._replace(scores=np.ones((2, 1))))
  scores = evaluator.compute()
  for t in ("segm", "bbox"):
    assert scores[f"{t}/AP"] == pytest.approx(1.0) == scores[f"{t}/AP_medium"]


def test_coco_prompt_boxes_move_exactly_under_c4(coco_dir, tmp_path):
  """Fractional boxes are put on the 1/64-pixel grid, where every rotation by 90
  degrees is exact in float32: the prompts moved by g and canonicalized by (g e)^-1
  are the numbers canonicalized by e^-1 (off the grid they are not)."""
  with open(os.path.join(coco_dir, "instances.json")) as f:
    data = json.load(f)
  data["annotations"] = [{"id": 1, "image_id": 9, "category_id": 5, "iscrowd": 0,
                          "area": 60.0, "bbox": [3.3, 7.7, 11.1, 5.5],
                          "segmentation": [[3.3, 7.7, 14.4, 7.7, 14.4, 13.2, 3.3, 13.2]]}]
  with open(tmp_path / "fractional.json", "w") as f:
    json.dump(data, f)
  ds = CocoInstances(str(tmp_path / "fractional.json"), os.path.join(coco_dir, "images"),
                     image_size=40)
  box = ds[0][1].boxes                                         # scaled by 0.8
  exact = np.asarray([3.3, 7.7, 14.4, 13.2]) * 0.8
  assert np.all(box[0] * 64 == np.round(box[0] * 64))
  assert np.abs(box[0] - exact).max() <= 1 / 128
  c4 = canon_jax.from_name("C4")

  def round_trip_is_exact(boxes):
    boxes = jnp.asarray(np.tile(boxes, (4, 1, 1)), jnp.float32)
    e = jnp.arange(4)
    for g in range(4):
      moved = canon_jax.transform_boxes(boxes, c4, jnp.full((4,), g), (40, 40))
      via = canon_jax.transform_boxes(moved, c4, c4.inverse(c4.compose(jnp.full((4,), g), e)),
                                      (40, 40))
      if not np.array_equal(via, canon_jax.transform_boxes(boxes, c4, c4.inverse(e),
                                                           (40, 40))):
        return False
    return True

  assert round_trip_is_exact(box)
  assert not round_trip_is_exact(exact[None].astype(np.float32))


def test_coco_instances_errors(coco_dir, tmp_path):
  with pytest.raises(ValueError, match="instances_val2017"):
    CocoInstances(str(tmp_path / "missing.json"), coco_dir)
  with pytest.raises(ValueError, match="not a directory"):
    CocoInstances(os.path.join(coco_dir, "instances.json"), str(tmp_path / "nope"))
  with pytest.raises(ValueError, match="image_ids not in"):
    CocoInstances(os.path.join(coco_dir, "instances.json"),
                  os.path.join(coco_dir, "images"), image_ids=[1])


def test_training_order_is_a_permutation_per_epoch():
  seen = np.concatenate([segment.batch_indices(s, 10, 3, seed=0) for s in range(3)])
  assert len(set(seen)) == 9 and set(seen) <= set(range(10))   # no repeats in an epoch
  again = np.concatenate([segment.batch_indices(s, 10, 3, seed=0) for s in range(3)])
  np.testing.assert_array_equal(seen, again)
  assert not np.array_equal(segment.batch_indices(3, 10, 3, 0),
                            segment.batch_indices(0, 10, 3, 0))  # epoch 2 reshuffled


def tiny_config():
  config = coco_sam_c4.get_config()
  config.data.name = "synthetic_instances"
  config.data.image_size = 32
  config.data.num_train = 16
  config.data.num_val = 6
  config.predictor.name = "box_fill"
  config.canonicalizer.update(dict(features=2, kernel_size=3, num_layers=4, resize=16))
  config.training.update(dict(batch_size=8, num_epochs=2))
  config.eval.batch_size = 3
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.progress_bar = False
  return config


def test_prior_only_step_learns_the_identity_on_a_fixed_batch():
  config = tiny_config()
  canon = segmentation.segmentation_canonicalizer("C4", **config.canonicalizer.to_dict())
  images = jnp.asarray(make_synthetic_instances(8, 32, seed=0).images)
  v = canon.init(jax.random.key(0), images)
  tx = optax.sgd(0.1, momentum=0.9)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=v["params"],
                     batch_stats=v["batch_stats"], opt_state=tx.init(v["params"]))
  step = jax.jit(segment.make_train_step(canon, tx, 1.0))
  first = None
  for _ in range(25):
    state, metrics = step(state, images)
    first = first if first is not None else float(metrics["prior_loss"])
  assert float(metrics["prior_loss"]) < 0.7 * first, (first, float(metrics["prior_loss"]))
  assert float(metrics["identity_rate"]) > 0.5


def test_segment_run_trains_resumes_and_scores(tmp_path):
  config = tiny_config()
  outcome = segment.run(config, str(tmp_path))
  lines = open(tmp_path / "metrics.jsonl").read().splitlines()
  assert [json.loads(l)["step"] for l in lines] == [1, 2, 3, 4]   # 16 images / 8, 2 epochs
  result = outcome["eval"]
  assert set(result) == {"sam", "sam+canonicalizer", "identity_rate"}
  canon = result["sam+canonicalizer"]
  assert canon["mAP"] > 0.05 and canon["box_mAP"] == pytest.approx(1.0)
  # C4, evaluation mode: the masks of a rotated image are the rotated masks, so every
  # pose scores the same.
  assert canon["per_element_mAP"] == [canon["mAP"]] * 4
  assert canon["group_averaged_mAP"] == pytest.approx(canon["mAP"])
  with open(tmp_path / "eval.json") as f:
    assert json.load(f)["sam+canonicalizer"]["mAP"] == canon["mAP"]

  again = segment.run(config, str(tmp_path))                     # resumes at the end
  assert open(tmp_path / "metrics.jsonl").read().splitlines() == lines
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(again["state"].params),
               jax.device_get(outcome["state"].params))

  config.training.batch_size = 4       # another order of the images: no silent resume
  with pytest.raises(ValueError, match=r"another order.*'batch_size': \(8, 4\)"):
    segment.run(config, str(tmp_path))


@pytest.mark.parametrize("field, value, message", [
    ("training.task_weight", 1.0, "config.training.task_weight must be 0"),
    ("data.name", "lvis", "config.data.name must be"),
    ("training.batch_size", 12, "divisible by the number of devices"),
])
def test_segment_config_errors(field, value, message):
  config = coco_sam_c4.get_config()
  config.data.val_annotations, config.data.val_images = "a.json", "val2017"
  set_field(config, field, value)
  with pytest.raises(ValueError, match=message):
    segment.validate_config(config, device_count=8)


def test_coco_config_needs_the_validation_files():
  config = coco_sam_c4.get_config()
  with pytest.raises(ValueError, match="val_annotations"):
    segment.validate_config(config, device_count=1)


def test_unprepared_coco_says_how_to_prepare_it(tmp_path):
  config = coco_sam_c4.get_config()
  config.data.data_dir = str(tmp_path)
  with pytest.raises(ValueError, match="download_and_prepare"):
    segment.TrainImages(config)


@pytest.fixture(scope="module")
def coco_tfds_metadata(tmp_path_factory):
  """A TFDS data_dir holding coco/2017's metadata files (dataset_info.json,
  features.json) as ``download_and_prepare`` writes them, for
  ``tfds.testing.mock_data``. They come from TFDS's own coco builder, whose
  ``_info()`` names ``tf.int64`` (the only TensorFlow it needs here): a stand-in
  replaces it while the builder describes its features."""
  import types
  from unittest import mock
  from tensorflow_datasets.object_detection import coco as tfds_coco
  root = str(tmp_path_factory.mktemp("tfds_metadata"))
  with mock.patch.object(tfds_coco, "tf", types.SimpleNamespace(int64=np.int64)):
    builder = tfds.builder("coco/2017", data_dir=root)
    info = builder.info
  template = tfds.core.ShardedFileTemplate(data_dir=builder.data_dir, dataset_name="coco",
                                           split="train", filetype_suffix="array_record")
  info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(
      name="train", shard_lengths=[6], num_bytes=0, filename_template=template)]))
  info.set_file_format("array_record", override=True)
  os.makedirs(builder.data_dir)
  info.write_to_directory(builder.data_dir)
  return root


def _mock_coco(metadata_dir, num_examples=6):
  return tfds.testing.mock_data(num_examples=num_examples, data_dir=metadata_dir,
                                policy=tfds.testing.MockPolicy.USE_FILES)


def test_coco_training_images_from_tfds_data_source(coco_tfds_metadata, tmp_path):
  config = coco_sam_c4.get_config()
  config.data.data_dir = str(tmp_path)      # mock_data serves the files instead
  config.data.image_size = 32
  with _mock_coco(coco_tfds_metadata):
    images = segment.TrainImages(config)
    records = tfds.core.read_only_builder.builder_from_files(
        "coco/2017", data_dir=str(tmp_path)).as_data_source(split="train")
    assert len(images) == 6
    for i in range(6):
      raw = records[i]["image"]              # (H, W, 3) uint8 of varying size
      assert raw.dtype == np.uint8 and raw.ndim == 3
      np.testing.assert_array_equal(images[i], segment.square_image(raw, 32))
      assert images[i].shape == (32, 32, 3) and images[i].dtype == np.float32


def test_segment_run_on_coco(coco_tfds_metadata, coco_dir, tmp_path):
  """Training images through the TFDS coco/2017 data source (mock data), validation
  from an instances file, scored in the original image coordinates."""
  config = tiny_config()
  config.data.name = "coco/2017"
  config.data.data_dir = str(tmp_path / "tfds")
  config.data.image_size = 40
  config.data.val_annotations = os.path.join(coco_dir, "instances.json")
  config.data.val_images = os.path.join(coco_dir, "images")
  config.training.update(dict(batch_size=4, num_epochs=1))
  with _mock_coco(coco_tfds_metadata, num_examples=8):
    outcome = segment.run(config, str(tmp_path / "run"))
  assert [r["step"] for r in map(json.loads, open(tmp_path / "run" / "metrics.jsonl"))] == [1, 2]
  for name in ("sam", "sam+canonicalizer"):
    entry = outcome["eval"][name]
    # The box-filling baseline reproduces both rectangles exactly at every pose; the
    # 2000-pixel one counts as "medium" (original pixels), the crowd region is ignored.
    assert entry["per_element_mAP"] == pytest.approx([1.0] * 4)
    assert entry["metrics"]["segm/AP_medium"] == pytest.approx(1.0)
    assert entry["metrics"]["bbox/AP_small"] == pytest.approx(1.0)
    assert entry["prompt_mIoU"] == 1.0


def test_square_image_matches_sam_layout():
  image = np.zeros((20, 40, 3), np.uint8)
  image[:, :20] = 255
  out = segment.square_image(image, 16)          # 20 x 40 -> 8 x 16, padded to 16 x 16
  assert out.shape == (16, 16, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out[:8, :6], 1.0, atol=1e-6)   # (antialiased edge between)
  np.testing.assert_allclose(out[:8, 10:], 0.0, atol=1e-6)
  assert np.all(out[8:] == 0)
