"""COCO metrics: a hand-computed case through pycocotools, padding, G-averaging."""
import numpy as np
import pytest

pytest.importorskip("pycocotools")

from canon_jax import coco_eval, segmentation as seg  # noqa: E402
from canon_jax.segmentation import Instances  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

SIZE = 40


def _rect(box):
  m = np.zeros((SIZE, SIZE), bool)
  x0, y0, x1, y1 = box
  m[y0:y1, x0:x1] = True
  return m


def _instances(per_image, scores=None):
  """per_image: lists of (box, label); padded to the longest list with junk slots."""
  m = max(len(p) for p in per_image)
  b = len(per_image)
  masks = np.zeros((b, m, SIZE, SIZE), bool)
  boxes = np.zeros((b, m, 4), np.float32)
  labels = np.ones((b, m), np.int32)
  valid = np.zeros((b, m), bool)
  for i, items in enumerate(per_image):
    for j, (box, label) in enumerate(items):
      masks[i, j] = _rect(box)
      boxes[i, j] = box
      labels[i, j] = label
      valid[i, j] = True
  return Instances(masks, boxes, labels, valid,
                   None if scores is None else np.asarray(scores, np.float32))


def _hand_case():
  """Two images, three 10 x 10 ground-truth squares, four predictions:

  image 1: p1 (score .9) = A exactly (IoU 1); p2 (.8) an 8 x 8 square inside B (.64);
  image 2: p3 (.7) where there is nothing (false positive); p4 (.6) a 9 x 9 square
  inside C (.81). By hand (101 recall points, 3 ground truths):
    IoU .50-.60: TP TP FP TP -> precision 1 up to recall 2/3, then 3/4:
                 AP = (67 + 34 * 3/4) / 101 = 92.5 / 101
    IoU .65-.80: TP FP FP TP -> 1 up to 1/3, 1/2 up to 2/3: (34 + 33 / 2) / 101
    IoU .85-.95: TP FP FP FP -> 1 up to 1/3: 34 / 101
  AP = (3 * 92.5 + 4 * 50.5 + 3 * 34) / 1010, AP50 = 92.5 / 101, AP75 = 50.5 / 101.
  Recall (max 100 dets): 1 at .50-.60, 2/3 at .65-.80, 1/3 at .85-.95 -> AR100 = 2/3;
  with 1 det per image (p1, p3) recall is 1/3 at every threshold.
  """
  gt = _instances([[((0, 0, 10, 10), 1), ((20, 20, 30, 30), 1)],
                   [((0, 0, 10, 10), 1)]])
  # A padding slot (valid False) with the top score would be a false positive if it
  # were counted.
  pred = _instances([[((0, 0, 10, 10), 1), ((21, 21, 29, 29), 1)],
                     [((20, 20, 30, 30), 1), ((0, 0, 9, 9), 1)]],
                    scores=[[0.9, 0.8], [0.7, 0.6]])
  pred = _pad_with_junk(pred)
  return gt, pred


def _pad_with_junk(pred):
  junk_mask = np.zeros((2, 1, SIZE, SIZE), bool)
  junk_mask[:, :, 30:40, 30:40] = True
  return Instances(
      np.concatenate([pred.masks, junk_mask], 1),
      np.concatenate([pred.boxes, np.tile([[[30, 30, 40, 40]]], (2, 1, 1))], 1),
      np.concatenate([pred.labels, np.ones((2, 1), np.int32)], 1),
      np.concatenate([pred.valid, np.zeros((2, 1), bool)], 1),
      np.concatenate([pred.scores, np.ones((2, 1), np.float32)], 1))


def test_hand_computed_case():
  gt, pred = _hand_case()
  got = coco_eval.coco_map(gt, pred)
  for t in ("segm", "bbox"):  # rectangles: mask IoU == box IoU
    assert got[f"{t}/AP"] == pytest.approx((3 * 92.5 + 4 * 50.5 + 3 * 34) / 1010, abs=1e-12)
    assert got[f"{t}/AP50"] == pytest.approx(92.5 / 101, abs=1e-12)
    assert got[f"{t}/AP75"] == pytest.approx(50.5 / 101, abs=1e-12)
    assert got[f"{t}/AP_small"] == got[f"{t}/AP"]
    assert np.isnan(got[f"{t}/AP_medium"]) and np.isnan(got[f"{t}/AP_large"])
    assert got[f"{t}/AR1"] == pytest.approx(1 / 3, abs=1e-12)
    assert got[f"{t}/AR100"] == pytest.approx(2 / 3, abs=1e-12)


def test_categories_are_matched_separately_and_averaged():
  gt, pred = _hand_case()
  # Relabelling p1 to category 2 (absent from the ground truth) removes a true
  # positive in category 1; category 2 has no ground truth and is not averaged.
  labels = pred.labels.copy()
  labels[0, 0] = 2
  got = coco_eval.coco_map(gt, pred._replace(labels=labels), iou_types=("segm",))
  # IoU .50-.60: TP FP TP -> recall 2/3 with precision 1, 1/2, 2/3: (34 + 33 * 2/3) / 101
  assert got["segm/AP50"] == pytest.approx((34 + 22) / 101, abs=1e-12)
  assert set(got) == {f"segm/{n}" for n in coco_eval.STAT_NAMES}


def test_batches_accumulate_like_one_batch():
  gt, pred = _hand_case()
  ev = coco_eval.CocoEvaluator()
  for i in range(2):
    ev.add(Instances(*(f[i:i + 1] for f in gt[:4])),
           Instances(*(f[i:i + 1] for f in pred)))
  np.testing.assert_equal(ev.compute(), coco_eval.coco_map(gt, pred))


def test_no_predictions_scores_zero():
  gt, pred = _hand_case()
  got = coco_eval.coco_map(gt, pred._replace(valid=np.zeros_like(pred.valid)))
  assert got["segm/AP"] == 0.0 and got["bbox/AR100"] == 0.0


def test_group_averaged_map_oracle_and_upright_only_predictor():
  gt, _ = _hand_case()
  images = np.zeros((2, SIZE, SIZE, 3), np.float32)

  def oracle(imgs, truth):
    return truth._replace(scores=np.ones(truth.valid.shape, np.float32))

  res = coco_eval.group_averaged_map(oracle, [(images, gt)], "D4")
  assert len(res.per_element) == 8
  for p in res.per_element:
    assert p["segm/AP"] == pytest.approx(1.0) and p["bbox/AP"] == pytest.approx(1.0)

  upright = _instances([[((0, 0, 10, 10), 1), ((20, 20, 30, 30), 1)], [((0, 0, 10, 10), 1)]],
                       scores=np.ones((2, 2)))

  def memorised(imgs, truth):  # always predicts the upright ground truth
    return upright

  res = coco_eval.group_averaged_map(memorised, [(images, gt)], "C4", iou_types=("segm",))
  assert res.per_element[0]["segm/AP"] == pytest.approx(1.0)
  assert res.per_element[1]["segm/AP"] < 0.9
  assert res.mean["segm/AP"] == pytest.approx(
      np.mean([p["segm/AP"] for p in res.per_element]))


def test_rejects_bad_input():
  gt, pred = _hand_case()
  with pytest.raises(ValueError, match="scores must be given"):
    coco_eval.coco_map(gt, pred._replace(scores=None))
  with pytest.raises(ValueError, match="category ids >= 1"):
    coco_eval.coco_map(gt._replace(labels=np.zeros_like(gt.labels)), pred)
  with pytest.raises(ValueError, match="iou_types"):
    coco_eval.CocoEvaluator(("keypoints",))
  annotations, detections = _crowd_case()
  evaluator = coco_eval.CocoEvaluator()
  with pytest.raises(ValueError, match="describe the B = 1 images"):
    evaluator.add_original([], detections)
  bad = ({k: v for k, v in annotations[0].items() if k != "area"},)
  with pytest.raises(ValueError, match=r"annotations\[0\] must have.*missing \['area'\]"):
    evaluator.add_original([coco_eval.OriginalImage(SIZE, SIZE, bad)], detections)
  with pytest.raises(ValueError, match="iscrowd 0 or 1"):
    evaluator.add_original([coco_eval.OriginalImage(
        SIZE, SIZE, ({**annotations[0], "iscrowd": 2},))], detections)
  with pytest.raises(ValueError, match="non-crowd"):
    evaluator.add_original([coco_eval.OriginalImage(SIZE, SIZE, annotations[1:])], detections)
    evaluator.compute()
  with pytest.raises(ValueError, match="batches must yield"):
    coco_eval.group_averaged_map(lambda *a: None, [(1, 2, 3, 4)], "C4")


def _crowd_case():
  """One 40 x 40 image: a square A (category 1) and a crowd region (category 1).

  Detections: d1 (score .9) lies inside the crowd region only; d2 (score .8) is A.
  """
  crowd = _rect((20, 20, 36, 36))
  rle = mask_utils.encode(np.asfortranarray(crowd.astype(np.uint8)))
  rle["counts"] = rle["counts"].decode()
  annotations = (
      {"category_id": 1, "iscrowd": 0, "area": 100.0, "bbox": [0, 0, 10, 10],
       "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]},
      {"category_id": 1, "iscrowd": 1, "area": 256.0, "bbox": [20, 20, 16, 16],
       "segmentation": rle},
  )
  detections = _instances([[((22, 22, 32, 32), 1), ((0, 0, 10, 10), 1)]],
                          scores=[[0.9, 0.8]])
  return annotations, detections


def test_a_detection_on_a_crowd_region_is_neither_true_nor_false_positive():
  annotations, detections = _crowd_case()
  kept = coco_eval.CocoEvaluator()
  kept.add_original([coco_eval.OriginalImage(SIZE, SIZE, annotations)], detections)
  got = kept.compute()
  # d1 matches only the crowd region: ignored, so d2 alone decides: precision 1.
  for t in ("segm", "bbox"):
    assert got[f"{t}/AP"] == pytest.approx(1.0) and got[f"{t}/AR100"] == 1.0

  # Without the crowd annotation d1 is a false positive ranked first:
  # precision 1/2 at recall 1 -> AP 1/2.
  dropped = coco_eval.CocoEvaluator()
  dropped.add_original([coco_eval.OriginalImage(SIZE, SIZE, annotations[:1])], detections)
  for t in ("segm", "bbox"):
    assert dropped.compute()[f"{t}/AP"] == pytest.approx(0.5, abs=1e-12)


def test_square_to_original_unpads_and_resizes():
  # A 100 x 200 image on a 40 x 40 square: content 20 x 40 (scale 1/5), padding below.
  masks = np.zeros((2, SIZE, SIZE), bool)
  masks[0, 4:12, 10:20] = True
  masks[1, 15:30, 0:5] = True           # half in the padding (rows >= 20)
  boxes = np.asarray([[10, 4, 20, 12], [0, 15, 5, 30]], np.float32)
  got_masks, got_boxes = coco_eval.square_to_original(masks, boxes, 100, 200)
  assert got_masks.shape == (2, 100, 200)
  want = np.zeros((100, 200), bool)
  want[20:60, 50:100] = True
  np.testing.assert_array_equal(got_masks[0], want)
  want = np.zeros((100, 200), bool)
  want[75:100, 0:25] = True
  np.testing.assert_array_equal(got_masks[1], want)
  np.testing.assert_array_equal(got_boxes, [[50, 20, 100, 60], [0, 75, 25, 100]])
  with pytest.raises(ValueError, match="square"):
    coco_eval.square_to_original(masks[:, :, :30], boxes, 100, 200)


def test_scores_in_original_coordinates():
  """A 40 x 50 object of a 100 x 200 image is 'medium' (area 2000 > 32^2), although on
  the 40 x 40 model input it covers 10 x 8 pixels ('small')."""
  annotation = {"category_id": 1, "iscrowd": 0, "area": 2000.0, "bbox": [50, 20, 50, 40],
                "segmentation": [[50, 20, 100, 20, 100, 60, 50, 60]]}
  square = _instances([[((10, 4, 20, 12), 1)]], scores=[[1.0]])
  evaluator = coco_eval.CocoEvaluator()
  evaluator.add_original([coco_eval.OriginalImage(100, 200, (annotation,))], square)
  got = evaluator.compute()
  for t in ("segm", "bbox"):
    assert got[f"{t}/AP"] == pytest.approx(1.0) == got[f"{t}/AP_medium"]
    assert np.isnan(got[f"{t}/AP_small"]) and np.isnan(got[f"{t}/AP_large"])
  on_square = coco_eval.coco_map(square, square)   # what scoring the input would say
  assert on_square["segm/AP_small"] == pytest.approx(1.0) and np.isnan(on_square["segm/AP_medium"])
  # The detection's box went into the file in original pixels (xywh).
  assert evaluator._predictions[0]["bbox"] == [50.0, 20.0, 50.0, 40.0]


def test_group_averaged_map_in_original_coordinates_with_crowd():
  annotations, _ = _crowd_case()
  # The prompt is A only (crowd regions are not prompted); the image shows the crowd.
  prompts = _instances([[((0, 0, 10, 10), 1)]])
  images = np.zeros((1, SIZE, SIZE, 3), np.float32)
  images[0, 22:32, 22:32] = 1.0
  batch = (images, prompts, [coco_eval.OriginalImage(SIZE, SIZE, annotations)])

  def predictor(imgs, truth):
    """The prompt's mask (score .8) and a detection of the bright patch (score .9)."""
    bright = np.asarray(imgs)[:, None, :, :, 0] > 0.5
    masks = np.concatenate([bright, np.asarray(truth.masks)], axis=1)
    return Instances(masks, seg.masks_to_boxes(masks), np.ones((1, 2), np.int32),
                     np.ones((1, 2), bool), np.asarray([[0.9, 0.8]]))

  res = coco_eval.group_averaged_map(predictor, [batch], "D4")
  for p in res.per_element:   # at every pose the patch matches only the crowd region
    assert p["segm/AP"] == pytest.approx(1.0) == p["bbox/AP"]
  res = coco_eval.group_averaged_map(predictor, [batch[:2]], "C4")  # crowd dropped
  assert res.mean["segm/AP"] == pytest.approx(0.5, abs=1e-12)


def test_prompt_ious_hand_computed():
  gt, pred = _hand_case()
  pred = Instances(*(f[:, :2] for f in pred))    # without the junk slot
  # image 1: A vs A (1), B vs an 8 x 8 square inside it (.64); image 2: C vs an empty
  # spot (0); image 2's second slot is padding.
  np.testing.assert_allclose(coco_eval.prompt_ious(gt, pred), [1.0, 0.64, 0.0])
  res = coco_eval.group_averaged_map(lambda imgs, truth: truth._replace(
      scores=np.ones(truth.valid.shape)), [(np.zeros((2, SIZE, SIZE, 3)), gt)], "C4",
      prompted=True)
  assert [p["segm/prompt_mIoU"] for p in res.per_element] == [1.0] * 4
