"""SAM in Flax: parity with Meta's segment_anything (random weights), conversion, pipeline."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch_shim import assert_logits_close, import_torchvision, numpy_state_dict, randomize_

from canon_jax import convert
from canon_jax.models import sam

import_torchvision()  # segment_anything imports torchvision.transforms
segment_anything = pytest.importorskip("segment_anything")
from segment_anything import modeling as ref_modeling  # noqa: E402


def _reference_tiny(seed: int = 0) -> torch.nn.Module:
  """segment_anything's Sam with SamTiny's sizes, every tensor randomised."""
  torch.manual_seed(seed)
  encoder = ref_modeling.ImageEncoderViT(
      img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4,
      out_chans=32, qkv_bias=True, norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6),
      use_rel_pos=True, window_size=3, global_attn_indexes=[1])
  prompt = ref_modeling.PromptEncoder(embed_dim=32, image_embedding_size=(8, 8),
                                      input_image_size=(64, 64), mask_in_chans=8)
  decoder = ref_modeling.MaskDecoder(
      transformer_dim=32, num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=32,
      transformer=ref_modeling.TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64,
                                                 num_heads=2))
  return randomize_(ref_modeling.Sam(encoder, prompt, decoder), seed)


@pytest.fixture(scope="module")
def tiny():
  reference = _reference_tiny()
  module = sam.SamTiny()
  variables = convert.convert_state_dict(numpy_state_dict(reference), module, "segment_anything")
  apply = jax.jit(module.apply, static_argnames="multimask_output")
  return reference, module, variables, apply


def _prompts(seed, batch, m, points):
  rng = np.random.default_rng(seed)
  xy = rng.uniform(0, 56, (batch, m, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(4, 30, (batch, m, 2))], -1).astype(np.float32)
  coords = rng.uniform(0, 63, (batch, m, points, 2)).astype(np.float32)
  labels = rng.integers(-1, 2, (batch, m, points)).astype(np.int32)
  masks = rng.normal(0, 3, (batch, m, 32, 32)).astype(np.float32)
  return boxes, coords, labels, masks


def _reference_outputs(reference, images, boxes=None, coords=None, labels=None, masks=None,
                       multimask=False):
  """Per image, as SamPredictor.predict_torch does: (B, M, K, 32, 32), (B, M, K)."""
  t = lambda x: None if x is None else torch.from_numpy(np.ascontiguousarray(x))
  low, ious = [], []
  with torch.no_grad():
    emb = reference.image_encoder(t(images.transpose(0, 3, 1, 2)))
    for b in range(images.shape[0]):
      points = None if coords is None else (t(coords[b]), t(labels[b]))
      sparse, dense = reference.prompt_encoder(
          points=points, boxes=None if boxes is None else t(boxes[b]),
          masks=None if masks is None else t(masks[b][:, None]))
      m, iou = reference.mask_decoder(image_embeddings=emb[b:b + 1],
                                      image_pe=reference.prompt_encoder.get_dense_pe(),
                                      sparse_prompt_embeddings=sparse,
                                      dense_prompt_embeddings=dense,
                                      multimask_output=multimask)
      low.append(m.numpy())
      ious.append(iou.numpy())
  return emb.numpy().transpose(0, 2, 3, 1), np.stack(low), np.stack(ious)


IMAGES = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)


def test_image_encoder_matches_segment_anything(tiny):
  reference, module, variables, _ = tiny
  emb, _, _ = _reference_outputs(reference, IMAGES[:1], boxes=np.zeros((1, 1, 4), np.float32))
  encode = jax.jit(functools.partial(module.apply, method=sam.Sam.encode_image))
  with jax.default_matmul_precision("highest"):
    assert_logits_close(encode(variables, jnp.asarray(IMAGES[:1])), emb)


@pytest.mark.parametrize("prompt_kinds, multimask", [
    (("coords", "labels"), True),  # points only: a padding point is appended
    (("coords", "labels", "boxes", "masks"), False),
])
def test_mask_logits_match_segment_anything(tiny, prompt_kinds, multimask):
  reference, _, variables, apply = tiny
  boxes, coords, labels, masks = _prompts(1, 2, 3, points=4)
  given = {k: v for k, v in dict(boxes=boxes, coords=coords, labels=labels,
                                 masks=masks).items() if k in prompt_kinds}
  _, low, iou = _reference_outputs(reference, IMAGES, multimask=multimask, **given)
  with jax.default_matmul_precision("highest"):
    ours_low, ours_iou = apply(variables, jnp.asarray(IMAGES), boxes=given.get("boxes"),
                               points=given.get("coords"), point_labels=given.get("labels"),
                               mask_inputs=given.get("masks"), multimask_output=multimask)
  assert ours_low.shape == low.shape == (2, 3, 3 if multimask else 1, 32, 32)
  assert_logits_close(ours_low, low)
  assert_logits_close(ours_iou, iou)


def test_postprocess_matches_segment_anything(tiny):
  reference = tiny[0]
  low = np.random.default_rng(2).normal(size=(3, 2, 32, 32)).astype(np.float32)
  with torch.no_grad():
    expected = reference.postprocess_masks(torch.from_numpy(low), (64, 45), (50, 35)).numpy()
  ours = sam.postprocess_masks(jnp.asarray(low), (64, 45), (50, 35), image_size=64)
  assert_logits_close(ours, expected, rtol=1e-5)
  images = np.random.default_rng(3).uniform(0, 255, (1, 50, 35, 3)).astype(np.float32)
  padded = sam.preprocess(sam.resize_longest_side(jnp.asarray(images), 64), 64)
  with torch.no_grad():
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(images.transpose(0, 3, 1, 2)), (64, 45), mode="bilinear",
        align_corners=False, antialias=True)
    expected = reference.preprocess(resized[0]).numpy().transpose(1, 2, 0)
  assert padded.shape == (1, 64, 64, 3)
  assert_logits_close(padded[0], expected, rtol=1e-5)


def test_conversion_is_strict(tiny):
  reference, module, _, _ = tiny
  state = numpy_state_dict(reference)
  missing = {k: v for k, v in state.items() if k != "mask_decoder.iou_token.weight"}
  with pytest.raises(ValueError, match=r"missing keys.*mask_decoder/iou_token"):
    convert.convert_state_dict(missing, module, "segment_anything")
  extra = {**state, "image_encoder.blocks.0.attn.extra": np.zeros(3, np.float32)}
  with pytest.raises(ValueError, match=r"unexpected keys.*attn\.extra"):
    convert.convert_state_dict(extra, module, "segment_anything")
  wrong = {**state, "image_encoder.pos_embed": np.zeros((1, 4, 4, 32), np.float32)}
  with pytest.raises(ValueError, match=r"shape mismatches.*pos_embed"):
    convert.convert_state_dict(wrong, module, "segment_anything")


@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h"])
def test_released_checkpoint_layouts_convert(variant):
  """Every key and shape of the released checkpoints maps onto our model (meta tensors)."""
  with torch.device("meta"):
    reference = segment_anything.sam_model_registry[variant]()
  state = {k: np.broadcast_to(np.float32(0), tuple(v.shape))
           for k, v in reference.state_dict().items()}
  variables = convert.convert_state_dict(state, sam.SAM_VARIANTS[variant](),
                                       "segment_anything")
  leaves = jax.tree_util.tree_leaves(variables)
  assert sum(x.size for x in leaves) == sum(int(np.prod(v.shape)) for v in state.values())
  assert len(leaves) == len(state)


def test_orbax_round_trip(tiny, tmp_path):
  reference, module, variables, apply = tiny
  metadata = convert.SamMetadata("tiny", 64, sam.PIXEL_MEAN, sam.PIXEL_STD, "random")
  convert.save_pretrained(str(tmp_path / "ckpt"), variables, metadata)
  loaded_module, loaded = convert.load_pretrained(str(tmp_path / "ckpt"))
  assert loaded_module == module
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)
  with pytest.raises(ValueError, match="must be empty"):
    convert.save_pretrained(str(tmp_path / "ckpt"), variables, metadata)

  # The command line converts a segment_anything .pth into the same checkpoint.
  weights = str(tmp_path / "sam_tiny.pth")
  torch.save(reference.state_dict(), weights)
  convert.main(["--arch", "sam_tiny", "--source", "segment_anything", "--weights", weights,
                "--out", str(tmp_path / "cli"), "--image_size", "64"])
  cli_module, cli = convert.load_pretrained(str(tmp_path / "cli"))
  assert cli_module == module and convert.read_metadata(str(tmp_path / "cli")).origin == weights
  jax.tree.map(np.testing.assert_array_equal, cli, variables)
  with pytest.raises(ValueError, match=r"arch must be one of \['sam_tiny', 'sam_vit_b'"):
    convert.convert_checkpoint("vit_b16", "segment_anything", str(tmp_path / "x"), weights)


def test_box_predictor_matches_segment_anything_pipeline(tiny):
  """Resize to the longest side, scale boxes, best of 3 masks, upsample, crop, resize."""
  reference, module, variables, _ = tiny
  images = np.random.default_rng(4).uniform(0, 1, (2, 40, 30, 3)).astype(np.float32)
  boxes = np.asarray([[[2, 3, 20, 14], [5, 5, 25, 38]], [[10, 8, 30, 31], [0, 0, 30, 40]]],
                     np.float32)
  with jax.default_matmul_precision("highest"):
    logits, scores = jax.jit(sam.box_predictor(module, variables, multimask_output=True))(
        jnp.asarray(images), jnp.asarray(boxes))
  assert logits.shape == (2, 2, 40, 30) and scores.shape == (2, 2)
  with torch.no_grad():
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(images.transpose(0, 3, 1, 2) * 255), (64, 48), mode="bilinear",
        align_corners=False, antialias=True)
    x = torch.stack([reference.preprocess(r) for r in resized]).numpy().transpose(0, 2, 3, 1)
  scaled = boxes * np.float32(64 / 40)
  _, low, iou = _reference_outputs(reference, x, boxes=scaled, multimask=True)
  best = iou.argmax(-1)
  low = np.take_along_axis(low, best[..., None, None, None], 2)[:, :, 0]
  with torch.no_grad():
    expected = reference.postprocess_masks(torch.from_numpy(low.reshape(4, 1, 32, 32)),
                                           (64, 48), (40, 30)).numpy().reshape(2, 2, 40, 30)
  assert_logits_close(logits, expected)
  assert_logits_close(scores, np.take_along_axis(iou, best[..., None], 2)[..., 0])
