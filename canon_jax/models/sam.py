"""Segment Anything (SAM, Kirillov et al. 2023) as Flax Linen modules.

The same function as Meta's ``segment_anything`` package (``sam_model_registry``),
laid out channels-last:

1. **Image encoder** (:class:`ImageEncoderViT`, ViTDet style): ``p x p`` patch
   embedding, an absolute position embedding ``(1, S/p, S/p, D)``, pre-LayerNorm
   blocks (``epsilon=1e-6``) whose attention adds *decomposed relative position
   embeddings* (one table per axis, ``(2 L - 1, D / heads)``) and runs in
   non-overlapping ``window_size`` windows (zero-padded at the bottom/right, the pad
   attended to as in the reference) except in the ``global_attn_indexes`` blocks,
   exact-GELU MLPs, then a neck (1x1 conv, LayerNorm, 3x3 conv, LayerNorm, no
   biases) to ``prompt_dim`` channels: ``(B, S, S, 3) -> (B, S/p, S/p, C)``.
2. **Prompt encoder** (:class:`PromptEncoder`): points and box corners are encoded
   with random Fourier features ``[sin(2 pi f), cos(2 pi f)]``,
   ``f = (2 xy / size - 1) @ G`` with a fixed Gaussian ``G`` (2, C/2), plus learned
   per-kind embeddings; coordinates are shifted by +0.5 (SAM treats them as pixel
   indices); a low-resolution mask prompt is downscaled by two stride-2 convs; no
   mask gives a learned constant.
3. **Mask decoder** (:class:`MaskDecoder`): an IoU token and ``1 + num_multimask``
   mask tokens join the sparse prompt tokens in a two-way transformer (token
   self-attention, token-to-image and image-to-token cross-attention with halved
   internal width, ReLU MLP, LayerNorm ``epsilon=1e-5``), the image tokens are
   upscaled 4x by two 2x2 stride-2 transposed convs, each mask token becomes a
   dynamic 1x1 filter through its own 3-layer MLP, and an MLP head predicts each
   mask's IoU. Output: low-resolution mask logits ``(N, K, 4 S/p, 4 S/p)``.

Sizes: :data:`SamViTB`, :data:`SamViTL`, :data:`SamViTH` (the released checkpoints)
and :data:`SamTiny` (tests). Layouts: images NHWC; image embeddings
``(B, h, w, C)``; mask logits ``(..., H, W)`` with the mask axis before the spatial
axes (as in the reference). Point and box coordinates are ``(x, y)`` in pixels of
the (resized, padded) model input; boxes are ``(x0, y0, x1, y1)``.

Pre- and post-processing (:func:`preprocess`, :func:`resize_longest_side`,
:func:`postprocess_masks`) follow ``Sam.preprocess`` / ``Sam.postprocess_masks`` and
``ResizeLongestSide``; :func:`box_predictor` wraps a model as the promptable
predictor of :mod:`canon_jax.segmentation`. The random Fourier matrix is a torch
buffer, not a parameter: here it lives in the ``"constants"`` collection.

>>> import jax, jax.numpy as jnp
>>> model = SamTiny()
>>> images = jnp.zeros((1, 64, 64, 3))
>>> boxes = jnp.array([[[8.0, 8.0, 40.0, 30.0]]])  # (B, M, 4)
>>> v = jax.eval_shape(model.init, jax.random.key(0), images, boxes)
>>> sorted(v)
['constants', 'params']
>>> logits, iou = jax.eval_shape(model.apply, v, images, boxes)
>>> logits.shape, iou.shape  # (B, M, K, 4 h, 4 w), (B, M, K)
((1, 1, 1, 32, 32), (1, 1, 1))
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from canon_jax import _checks, state_dict_rules as rules
from canon_jax.data.image_ops import longest_side_shape  # SAM's resize rule

PIXEL_MEAN = (123.675, 116.28, 103.53)
"""SAM's RGB normalisation mean, for pixel values in [0, 255]."""
PIXEL_STD = (58.395, 57.12, 57.375)
"""SAM's RGB normalisation standard deviation, for pixel values in [0, 255]."""

_gelu = functools.partial(nn.gelu, approximate=False)


def _layer_norm(name: str | None, epsilon: float) -> nn.LayerNorm:
  """LayerNorm over the last (channel) axis with torch's two-pass variance; SAM's
  LayerNorm2d is this on NHWC maps. ``name`` None inside ``setup``."""
  return nn.LayerNorm(epsilon=epsilon, use_fast_variance=False, name=name)


# ---------------------------------------------------------------------- image encoder


def window_partition(x: jax.Array, window: int) -> tuple[jax.Array, tuple[int, int]]:
  """(B, H, W, C) -> (B * nH * nW, window, window, C) windows, row-major, and the
  padded size (Hp, Wp); the bottom/right are zero-padded to multiples of ``window``."""
  b, h, w, c = x.shape
  hp, wp = -(-h // window) * window, -(-w // window) * window
  x = jnp.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
  x = x.reshape(b, hp // window, window, wp // window, window, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: jax.Array, window: int, padded: tuple[int, int],
                       size: tuple[int, int]) -> jax.Array:
  """Inverse of :func:`window_partition`, cropping the padding: -> (B, H, W, C)."""
  hp, wp = padded
  b = windows.shape[0] // (hp // window * wp // window)
  x = windows.reshape(b, hp // window, wp // window, window, window, -1)
  x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
  return x[:, :size[0], :size[1]]


def relative_positions(q_size: int, k_size: int, table: jax.Array) -> jax.Array:
  """Rows of a relative-position table for every (query, key) pair: (q, k, C).

  ``table`` is (2 max(q, k) - 1, C); entry ``i - j + k - 1`` (rescaled when the
  sizes differ) is the embedding of query position i relative to key position j.
  """
  length = 2 * max(q_size, k_size) - 1
  if table.shape[0] != length:
    raise ValueError(f"relative position table must have 2 * max({q_size}, {k_size}) - 1 "
                     f"= {length} rows; got {table.shape[0]}. The image size must be the "
                     f"one the model was built for.")
  q = np.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
  k = np.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
  index = (q - k + (k_size - 1) * max(q_size / k_size, 1.0)).astype(np.int64)
  return table[index]


class RelPosAttention(nn.Module):
  """Multi-head self-attention on a token grid with decomposed relative positions.

  ``(B, H, W, D) -> (B, H, W, D)``: logits ``(q / sqrt(d)) . k + q . R_h[i_h - j_h]
  + q . R_w[i_w - j_w]`` per head (the relative terms use the unscaled query).
  Parameters: ``qkv`` Dense (D, 3D) whose outputs are ``[q; k; v]``, each head-major;
  ``proj`` Dense (D, D); ``rel_pos_h`` (2H - 1, d), ``rel_pos_w`` (2W - 1, d).

  Attributes:
    num_heads: heads; divides D.
    grid: (H, W) the token grid the relative tables are sized for.
    use_rel_pos: add the relative position terms.
  """
  num_heads: int
  grid: tuple[int, int]
  use_rel_pos: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, dim = x.shape
    if (h, w) != tuple(self.grid):
      raise ValueError(f"attention input must be a {self.grid} token grid; got {(h, w)}.")
    heads, head_dim = self.num_heads, dim // self.num_heads
    qkv = nn.Dense(3 * dim, name="qkv")(x).reshape(b, h * w, 3, heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, N, heads, d)
    logits = jnp.einsum("bqnd,bknd->bnqk", q * head_dim ** -0.5, k)
    if self.use_rel_pos:
      table_h = self.param("rel_pos_h", nn.initializers.zeros, (2 * h - 1, head_dim))
      table_w = self.param("rel_pos_w", nn.initializers.zeros, (2 * w - 1, head_dim))
      grid_q = q.reshape(b, h, w, heads, head_dim)
      rel_h = jnp.einsum("byxnd,ykd->bnyxk", grid_q, relative_positions(h, h, table_h))
      rel_w = jnp.einsum("byxnd,xkd->bnyxk", grid_q, relative_positions(w, w, table_w))
      logits = (logits.reshape(b, heads, h, w, h, w) + rel_h[..., :, None]
                + rel_w[..., None, :]).reshape(b, heads, h * w, h * w)
    attn = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bnqk,bknd->bqnd", attn, v).reshape(b, h, w, dim)
    return nn.Dense(dim, name="proj")(out)


class EncoderBlock(nn.Module):
  """``x + attn(norm1(x))`` (windowed unless ``window_size == 0``), then
  ``x + mlp(norm2(x))`` with an exact-GELU MLP (``lin1``, ``lin2``).

  Attributes:
    num_heads: attention heads.
    mlp_dim: MLP hidden width.
    window_size: attention window side in tokens; 0 for global attention.
    grid: (H, W) token grid of the image.
  """
  num_heads: int
  mlp_dim: int
  window_size: int
  grid: tuple[int, int]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h, w = x.shape[1:3]
    y = _layer_norm("norm1", 1e-6)(x)
    if self.window_size > 0:
      window = (self.window_size, self.window_size)
      y, padded = window_partition(y, self.window_size)
      y = RelPosAttention(self.num_heads, window, name="attn")(y)
      y = window_unpartition(y, self.window_size, padded, (h, w))
    else:
      y = RelPosAttention(self.num_heads, tuple(self.grid), name="attn")(y)
    x = x + y
    y = _layer_norm("norm2", 1e-6)(x)
    y = nn.Dense(self.mlp_dim, name="lin1")(y)
    return x + nn.Dense(x.shape[-1], name="lin2")(_gelu(y))


class ImageEncoderViT(nn.Module):
  """SAM's ViT image encoder: (B, S, S, 3) normalised images -> (B, S/p, S/p, C).

  Parameters: ``patch_embed`` (conv ``(p, p, 3, D)``), ``pos_embed`` ``(1, S/p, S/p,
  D)``, ``blocks_{i}`` (``norm1``, ``attn/{qkv,proj,rel_pos_h,rel_pos_w}``,
  ``norm2``, ``lin1``, ``lin2``), ``neck_0`` (1x1 conv), ``neck_1`` (LayerNorm),
  ``neck_2`` (3x3 conv), ``neck_3`` (LayerNorm).

  Attributes:
    image_size: S, the (padded) input side the position embeddings are sized for.
    patch_size: p.
    embed_dim: D.
    depth: number of blocks.
    num_heads: attention heads.
    mlp_ratio: MLP width / D.
    out_chans: C, channels of the image embedding.
    window_size: window side (tokens) of the windowed blocks.
    global_attn_indexes: blocks with global attention.
  """
  image_size: int = 1024
  patch_size: int = 16
  embed_dim: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  out_chans: int = 256
  window_size: int = 14
  global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    _checks.check_nhwc(images)
    s, p = self.image_size, self.patch_size
    if images.shape[1:3] != (s, s):
      raise ValueError(f"images must be padded to ({s}, {s}) (see preprocess); got "
                       f"{images.shape[1:3]}.")
    grid = (s // p, s // p)
    x = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding="VALID",
                name="patch_embed")(images)
    x = x + self.param("pos_embed", nn.initializers.zeros, (1, *grid, self.embed_dim))
    for i in range(self.depth):
      window = 0 if i in self.global_attn_indexes else self.window_size
      x = EncoderBlock(self.num_heads, int(self.embed_dim * self.mlp_ratio), window, grid,
                       name=f"blocks_{i}")(x)
    x = nn.Conv(self.out_chans, (1, 1), use_bias=False, name="neck_0")(x)
    x = _layer_norm("neck_1", 1e-6)(x)
    x = nn.Conv(self.out_chans, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                name="neck_2")(x)
    return _layer_norm("neck_3", 1e-6)(x)


# --------------------------------------------------------------------- prompt encoder


class PromptEncoder(nn.Module):
  """Embeds points, boxes and mask prompts of N prompt sets.

  Parameters: ``point_embeddings_{0..3}`` (1, C) (negative point, positive point,
  box top-left, box bottom-right), ``not_a_point_embed`` (1, C), ``no_mask_embed``
  (1, C), ``mask_downscaling_{0,1,3,4,6}`` (2x2/2 conv, LayerNorm, 2x2/2 conv,
  LayerNorm, 1x1 conv); constant ``positional_encoding_gaussian_matrix`` (2, C/2).

  Attributes:
    embed_dim: C.
    image_embedding_size: (h, w) of the image embedding.
    input_image_size: (H, W) of the padded model input (coordinates are in it).
    mask_in_chans: hidden channels of the mask downscaling.
  """
  embed_dim: int = 256
  image_embedding_size: tuple[int, int] = (64, 64)
  input_image_size: tuple[int, int] = (1024, 1024)
  mask_in_chans: int = 16

  def setup(self):
    c = self.embed_dim
    normal = nn.initializers.normal(1.0)
    self.gaussian = self.variable(
        "constants", "positional_encoding_gaussian_matrix",
        lambda: jax.random.normal(self.make_rng("params"), (2, c // 2)))
    self.point_embeddings = [self.param(f"point_embeddings_{i}", normal, (1, c))
                             for i in range(4)]
    self.not_a_point_embed = self.param("not_a_point_embed", normal, (1, c))
    self.no_mask_embed = self.param("no_mask_embed", normal, (1, c))
    # Attribute names are the module names: torch's mask_downscaling.{0,1,3,4,6}.
    self.mask_downscaling_0 = nn.Conv(self.mask_in_chans // 4, (2, 2), strides=(2, 2),
                                      padding="VALID")
    self.mask_downscaling_1 = _layer_norm(None, 1e-6)
    self.mask_downscaling_3 = nn.Conv(self.mask_in_chans, (2, 2), strides=(2, 2),
                                      padding="VALID")
    self.mask_downscaling_4 = _layer_norm(None, 1e-6)
    self.mask_downscaling_6 = nn.Conv(c, (1, 1))

  def _fourier(self, unit_coords: jax.Array) -> jax.Array:
    """Points in [0, 1]^2, (..., 2) as (x, y) -> (..., C) random Fourier features."""
    f = 2 * jnp.pi * ((2 * unit_coords - 1) @ self.gaussian.value)
    return jnp.concatenate([jnp.sin(f), jnp.cos(f)], axis=-1)

  def dense_pe(self) -> jax.Array:
    """Positional encoding of every image-embedding cell centre: (1, h, w, C)."""
    h, w = self.image_embedding_size
    y, x = np.mgrid[:h, :w]
    grid = np.stack([(x + 0.5) / w, (y + 0.5) / h], axis=-1).astype(np.float32)
    return self._fourier(jnp.asarray(grid))[None]

  def _embed_coords(self, coords: jax.Array) -> jax.Array:
    h, w = self.input_image_size
    shifted = coords.astype(jnp.float32) + 0.5  # pixel index -> pixel centre
    return self._fourier(shifted / jnp.array([w, h], jnp.float32))

  def embed_points(self, points: jax.Array, labels: jax.Array, pad: bool) -> jax.Array:
    """(N, P, 2) xy and (N, P) labels (1 positive, 0 negative, -1 padding) -> (N, P', C).

    With ``pad`` (no box prompt) a padding point is appended, as in the reference.
    """
    if pad:
      points = jnp.concatenate([points, jnp.zeros((points.shape[0], 1, 2), points.dtype)], 1)
      labels = jnp.concatenate([labels, -jnp.ones((labels.shape[0], 1), labels.dtype)], 1)
    emb = self._embed_coords(points)
    labels = labels[..., None]
    emb = jnp.where(labels == -1, self.not_a_point_embed, emb)
    emb = emb + jnp.where(labels == 0, self.point_embeddings[0], 0.0)
    return emb + jnp.where(labels == 1, self.point_embeddings[1], 0.0)

  def embed_boxes(self, boxes: jax.Array) -> jax.Array:
    """(N, 4) xyxy -> (N, 2, C): one token per corner."""
    emb = self._embed_coords(boxes.reshape(-1, 2, 2))
    return emb + jnp.concatenate(self.point_embeddings[2:4], 0)[None]

  def embed_masks(self, masks: jax.Array) -> jax.Array:
    """(N, 4h, 4w) mask logits -> (N, h, w, C)."""
    x = _gelu(self.mask_downscaling_1(self.mask_downscaling_0(masks[..., None])))
    x = _gelu(self.mask_downscaling_4(self.mask_downscaling_3(x)))
    return self.mask_downscaling_6(x)

  def __call__(self, points: tuple[jax.Array, jax.Array] | None = None,
               boxes: jax.Array | None = None,
               masks: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Sparse (N, T, C) tokens (points, then box corners) and dense (N, h, w, C).

    Args:
      points: ``(coords (N, P, 2), labels (N, P))`` or None.
      boxes: (N, 4) or None.
      masks: (N, 4h, 4w) low-resolution mask logits or None.
    """
    given = [x for x in (None if points is None else points[0], boxes, masks)
             if x is not None]
    n = given[0].shape[0] if given else 1
    sparse = jnp.zeros((n, 0, self.embed_dim), jnp.float32)
    if points is not None:
      sparse = jnp.concatenate([sparse, self.embed_points(*points, pad=boxes is None)], 1)
    if boxes is not None:
      sparse = jnp.concatenate([sparse, self.embed_boxes(boxes)], 1)
    if masks is not None:
      dense = self.embed_masks(masks)
    else:
      h, w = self.image_embedding_size
      dense = jnp.broadcast_to(self.no_mask_embed[None, None], (n, h, w, self.embed_dim))
    return sparse, dense


# ----------------------------------------------------------------------- mask decoder


class Attention(nn.Module):
  """Cross/self attention with an internal width ``C / downsample_rate``.

  ``(q (N, Tq, C), k (N, Tk, C), v (N, Tk, C)) -> (N, Tq, C)``; parameters
  ``q_proj``, ``k_proj``, ``v_proj`` (C, C') and ``out_proj`` (C', C).
  """
  num_heads: int
  downsample_rate: int = 1

  @nn.compact
  def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    dim = q.shape[-1]
    inner = dim // self.downsample_rate
    if inner % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide the internal width {inner}.")
    split = lambda x: x.reshape(*x.shape[:2], self.num_heads, inner // self.num_heads)
    q = split(nn.Dense(inner, name="q_proj")(q))
    k = split(nn.Dense(inner, name="k_proj")(k))
    v = split(nn.Dense(inner, name="v_proj")(v))
    logits = jnp.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(q.shape[-1])
    out = jnp.einsum("bnqk,bknd->bqnd", jax.nn.softmax(logits, axis=-1), v)
    return nn.Dense(dim, name="out_proj")(out.reshape(*out.shape[:2], inner))


class TwoWayBlock(nn.Module):
  """Token self-attention, tokens -> image, token MLP, image -> tokens; post-norm.

  Attributes:
    num_heads: heads of every attention.
    mlp_dim: hidden width of the ReLU MLP (``lin1``, ``lin2``).
    downsample_rate: internal width divisor of the cross-attentions.
    skip_first_layer_pe: first block: self-attention on the bare tokens, no residual.
  """
  num_heads: int
  mlp_dim: int
  downsample_rate: int = 2
  skip_first_layer_pe: bool = False

  @nn.compact
  def __call__(self, queries, keys, query_pe, key_pe):
    norm = lambda i: _layer_norm(f"norm{i}", 1e-5)
    self_attn = Attention(self.num_heads, name="self_attn")
    if self.skip_first_layer_pe:
      queries = self_attn(queries, queries, queries)
    else:
      q = queries + query_pe
      queries = queries + self_attn(q, q, queries)
    queries = norm(1)(queries)
    q, k = queries + query_pe, keys + key_pe
    queries = norm(2)(queries + Attention(self.num_heads, self.downsample_rate,
                                          name="cross_attn_token_to_image")(q, k, keys))
    y = nn.Dense(self.mlp_dim, name="lin1")(queries)
    queries = norm(3)(queries + nn.Dense(queries.shape[-1], name="lin2")(nn.relu(y)))
    q, k = queries + query_pe, keys + key_pe
    keys = norm(4)(keys + Attention(self.num_heads, self.downsample_rate,
                                    name="cross_attn_image_to_token")(k, q, queries))
    return queries, keys


class TwoWayTransformer(nn.Module):
  """``depth`` :class:`TwoWayBlock` s, a final token-to-image attention and LayerNorm.

  ``(image (N, HW, C), image_pe (N, HW, C), tokens (N, T, C)) -> (tokens, image)``.
  """
  depth: int = 2
  num_heads: int = 8
  mlp_dim: int = 2048
  downsample_rate: int = 2

  @nn.compact
  def __call__(self, image, image_pe, tokens):
    queries, keys = tokens, image
    for i in range(self.depth):
      queries, keys = TwoWayBlock(self.num_heads, self.mlp_dim, self.downsample_rate,
                                  skip_first_layer_pe=i == 0, name=f"layers_{i}")(
                                      queries, keys, tokens, image_pe)
    attn = Attention(self.num_heads, self.downsample_rate, name="final_attn_token_to_image")
    queries = queries + attn(queries + tokens, keys + image_pe, keys)
    return _layer_norm("norm_final_attn", 1e-5)(queries), keys


class MLP(nn.Module):
  """``layers_{i}`` Dense layers with ReLU between them: (..., C_in) -> (..., out)."""
  hidden_dim: int
  output_dim: int
  num_layers: int

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_layers):
      last = i == self.num_layers - 1
      x = nn.Dense(self.output_dim if last else self.hidden_dim, name=f"layers_{i}")(x)
      x = x if last else nn.relu(x)
    return x


class ConvTranspose2x2(nn.Module):
  """Stride-2 2x2 transposed convolution: (N, h, w, Cin) -> (N, 2h, 2w, Cout).

  ``out[2i + a, 2j + b] = x[i, j] @ kernel[a, b] + bias``; ``kernel`` (2, 2, Cin, Cout)
  is torch's ``ConvTranspose2d`` weight (Cin, Cout, 2, 2) transposed (2, 3, 0, 1).
  """
  features: int

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (2, 2, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    n, h, w, _ = x.shape
    y = jnp.einsum("nhwc,abcd->nhawbd", x, kernel)
    return y.reshape(n, 2 * h, 2 * w, self.features) + bias


class MaskDecoder(nn.Module):
  """Predicts masks and their IoU from image and prompt embeddings.

  Parameters: ``iou_token`` (1, C), ``mask_tokens`` (K + 1, C), ``transformer``,
  ``output_upscaling_{0,1,3}`` (transposed conv, LayerNorm, transposed conv),
  ``output_hypernetworks_mlps_{i}`` and ``iou_prediction_head`` (:class:`MLP`).

  Attributes:
    transformer_dim: C.
    num_multimask_outputs: K.
    depth, num_heads, mlp_dim, downsample_rate: the two-way transformer.
    iou_head_depth, iou_head_hidden_dim: the IoU MLP.
  """
  transformer_dim: int = 256
  num_multimask_outputs: int = 3
  depth: int = 2
  num_heads: int = 8
  mlp_dim: int = 2048
  downsample_rate: int = 2
  iou_head_depth: int = 3
  iou_head_hidden_dim: int = 256

  @nn.compact
  def __call__(self, image_embeddings: jax.Array, image_pe: jax.Array,
               sparse: jax.Array, dense: jax.Array,
               multimask_output: bool) -> tuple[jax.Array, jax.Array]:
    """Mask logits and IoU predictions of N prompt sets.

    Args:
      image_embeddings: (N, h, w, C), the image embedding of each prompt set's image.
      image_pe: (1, h, w, C) dense positional encoding.
      sparse: (N, T, C) prompt tokens.
      dense: (N, h, w, C) dense prompt embeddings.
      multimask_output: the K disambiguating masks, else the single mask.

    Returns:
      ``(masks (N, K or 1, 4h, 4w), iou (N, K or 1))``.
    """
    c = self.transformer_dim
    num_masks = self.num_multimask_outputs + 1
    normal = nn.initializers.normal(1.0)
    output_tokens = jnp.concatenate([self.param("iou_token", normal, (1, c)),
                                     self.param("mask_tokens", normal, (num_masks, c))], 0)
    n, h, w, _ = image_embeddings.shape
    tokens = jnp.concatenate(
        [jnp.broadcast_to(output_tokens[None], (n, *output_tokens.shape)), sparse], 1)
    src = (image_embeddings + dense).reshape(n, h * w, c)
    pos = jnp.broadcast_to(image_pe, (n, h, w, c)).reshape(n, h * w, c)
    hs, src = TwoWayTransformer(self.depth, self.num_heads, self.mlp_dim,
                                self.downsample_rate, name="transformer")(src, pos, tokens)
    x = ConvTranspose2x2(c // 4, name="output_upscaling_0")(src.reshape(n, h, w, c))
    x = _gelu(_layer_norm("output_upscaling_1", 1e-6)(x))
    x = _gelu(ConvTranspose2x2(c // 8, name="output_upscaling_3")(x))
    hyper = jnp.stack([MLP(c, c // 8, 3, name=f"output_hypernetworks_mlps_{i}")(hs[:, 1 + i])
                       for i in range(num_masks)], axis=1)
    masks = jnp.einsum("ntc,nhwc->nthw", hyper, x)
    iou = MLP(self.iou_head_hidden_dim, num_masks, self.iou_head_depth,
              name="iou_prediction_head")(hs[:, 0])
    keep = slice(1, None) if multimask_output else slice(0, 1)
    return masks[:, keep], iou[:, keep]


# ------------------------------------------------------------------------------- SAM


class Sam(nn.Module):
  """Segment Anything: preprocessed images and prompts -> low-resolution mask logits.

  Call ``apply(variables, images, boxes=..., points=..., point_labels=...,
  mask_inputs=..., multimask_output=False)``, or the two halves
  ``method=Sam.encode_image`` (images -> embeddings, once per image) and
  ``method=Sam.decode`` (embeddings + prompts -> masks, per prompt batch).

  Shapes: images (B, S, S, 3) normalised and padded (:func:`preprocess`); every
  image has M prompt sets, each with any of: a box (B, M, 4), P points (B, M, P, 2)
  with labels (B, M, P) (1 foreground, 0 background, -1 padding), a mask prompt
  (B, M, 4h, 4w). Output: mask logits (B, M, K, 4h, 4w) with ``h = w = S / p`` and
  predicted IoUs (B, M, K); K = ``num_multimask_outputs`` or 1.

  Attributes: ``image_encoder`` (an unbound :class:`ImageEncoderViT`: image side S,
  patch p, width, depth, heads, windows; its ``out_chans`` is the prompt width),
  ``mask_in_chans``, the decoder (``decoder_depth``, ``decoder_heads``,
  ``decoder_mlp_dim``, ``num_multimask_outputs``, ``iou_head_depth``,
  ``iou_head_hidden_dim``) and the pixel statistics ``pixel_mean`` / ``pixel_std``
  (for [0, 255] inputs). The variants (:data:`SAM_VARIANTS`) fill them in.
  """
  image_encoder: ImageEncoderViT
  mask_in_chans: int = 16
  decoder_depth: int = 2
  decoder_heads: int = 8
  decoder_mlp_dim: int = 2048
  num_multimask_outputs: int = 3
  iou_head_depth: int = 3
  iou_head_hidden_dim: int = 256
  pixel_mean: tuple[float, float, float] = PIXEL_MEAN
  pixel_std: tuple[float, float, float] = PIXEL_STD

  @property
  def image_size(self) -> int:
    """Side S of the padded input images."""
    return self.image_encoder.image_size

  @property
  def patch_size(self) -> int:
    return self.image_encoder.patch_size

  @property
  def prompt_dim(self) -> int:
    """Channels of the image embedding and of the prompt tokens."""
    return self.image_encoder.out_chans

  @property
  def embedding_size(self) -> int:
    """Side h = w of the image embedding (and a quarter of the low-res masks')."""
    return self.image_size // self.patch_size

  def setup(self):
    e = self.embedding_size
    self.prompt_encoder = PromptEncoder(self.prompt_dim, (e, e),
                                        (self.image_size, self.image_size),
                                        self.mask_in_chans)
    self.mask_decoder = MaskDecoder(
        self.prompt_dim, self.num_multimask_outputs, self.decoder_depth, self.decoder_heads,
        self.decoder_mlp_dim, 2, self.iou_head_depth, self.iou_head_hidden_dim)

  def encode_image(self, images: jax.Array) -> jax.Array:
    """(B, S, S, 3) preprocessed images -> (B, h, w, prompt_dim) embeddings."""
    return self.image_encoder(images)

  def decode(self, embeddings: jax.Array, boxes: jax.Array | None = None,
             points: jax.Array | None = None, point_labels: jax.Array | None = None,
             mask_inputs: jax.Array | None = None,
             multimask_output: bool = False) -> tuple[jax.Array, jax.Array]:
    """(B, h, w, C) embeddings and (B, M, ...) prompts -> masks, IoUs (see class doc)."""
    given = {"boxes": boxes, "points": points, "mask_inputs": mask_inputs}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
      raise ValueError("decode needs at least one of boxes, points or mask_inputs.")
    if (points is None) != (point_labels is None):
      raise ValueError("points and point_labels must be given together.")
    b, m = next(iter(given.values())).shape[:2]
    for name, value in given.items():
      if value.shape[:2] != (b, m):
        raise ValueError(f"{name} must have leading shape (B, M) = {(b, m)}; got "
                         f"{tuple(value.shape)}.")
    if embeddings.shape[0] != b:
      raise ValueError(f"prompts must have batch size {embeddings.shape[0]} (the images'); "
                       f"got {b}.")
    flat = lambda x: None if x is None else x.reshape(b * m, *x.shape[2:])
    point_prompt = None if points is None else (flat(points), flat(point_labels))
    sparse, dense = self.prompt_encoder(point_prompt, flat(boxes), flat(mask_inputs))
    masks, iou = self.mask_decoder(jnp.repeat(embeddings, m, axis=0),
                                   self.prompt_encoder.dense_pe(), sparse, dense,
                                   multimask_output)
    return masks.reshape(b, m, *masks.shape[1:]), iou.reshape(b, m, -1)

  def __call__(self, images: jax.Array, boxes: jax.Array | None = None,
               points: jax.Array | None = None, point_labels: jax.Array | None = None,
               mask_inputs: jax.Array | None = None,
               multimask_output: bool = False) -> tuple[jax.Array, jax.Array]:
    return self.decode(self.encode_image(images), boxes, points, point_labels,
                       mask_inputs, multimask_output)


def _variant(image_encoder: ImageEncoderViT, **defaults) -> Callable[..., Sam]:
  """A SAM variant's constructor: ``(image_size=None, **overrides) -> Sam``, with
  ``image_size`` (the encoder's S) and any other :class:`Sam` field overridable."""
  def make(image_size: int | None = None, **overrides) -> Sam:
    encoder = image_encoder if image_size is None else image_encoder.clone(
        parent=None, image_size=image_size)
    return Sam(image_encoder=encoder, **{**defaults, **overrides})
  return make


SamViTB = _variant(ImageEncoderViT(embed_dim=768, depth=12, num_heads=12,
                                   global_attn_indexes=(2, 5, 8, 11)))
"""SAM ViT-B (``sam_vit_b_01ec64.pth``), 93.7 M parameters."""
SamViTL = _variant(ImageEncoderViT(embed_dim=1024, depth=24, num_heads=16,
                                   global_attn_indexes=(5, 11, 17, 23)))
"""SAM ViT-L (``sam_vit_l_0b3195.pth``), 312 M parameters."""
SamViTH = _variant(ImageEncoderViT(embed_dim=1280, depth=32, num_heads=16,
                                   global_attn_indexes=(7, 15, 23, 31)))
"""SAM ViT-H (``sam_vit_h_4b8939.pth``), 641 M parameters."""
SamTiny = _variant(
    ImageEncoderViT(image_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                    global_attn_indexes=(1,), window_size=3, out_chans=32),
    mask_in_chans=8, decoder_depth=2, decoder_heads=2, decoder_mlp_dim=64,
    iou_head_hidden_dim=32)
"""Test-sized SAM: 64 x 64 inputs, 8 x 8 patches, one windowed block whose 3 x 3
windows need padding, one global block, prompt width 32 (no pretrained weights)."""

SAM_VARIANTS = {"vit_b": SamViTB, "vit_l": SamViTL, "vit_h": SamViTH, "tiny": SamTiny}
"""Variant name (``segment_anything.sam_model_registry``'s) -> constructor."""


# ------------------------------------------------------------------ pre/postprocessing


def resize_longest_side(images: jax.Array, target: int) -> jax.Array:
  """(B, H, W, C) -> (B, H', W', C) with max(H', W') = ``target``, bilinear with
  antialiasing (``ResizeLongestSide.apply_image_torch``; ``SamPredictor.set_image``
  resizes uint8 images with PIL instead, which differs by interpolation noise)."""
  _checks.check_nhwc(images)
  h, w = longest_side_shape(images.shape[1], images.shape[2], target)
  return jax.image.resize(images, (images.shape[0], h, w, images.shape[3]), "linear",
                          antialias=True)


def preprocess(images: jax.Array, image_size: int = 1024,
               pixel_mean: Sequence[float] = PIXEL_MEAN,
               pixel_std: Sequence[float] = PIXEL_STD) -> jax.Array:
  """Normalises (B, H, W, 3) images with values in [0, 255] and zero-pads them at the
  bottom/right to (B, image_size, image_size, 3), as ``Sam.preprocess``."""
  _checks.check_nhwc(images)
  h, w = images.shape[1:3]
  if max(h, w) > image_size:
    raise ValueError(f"images must fit in {image_size} x {image_size} (see "
                     f"resize_longest_side); got {h} x {w}.")
  x = (images - jnp.asarray(pixel_mean, images.dtype)) / jnp.asarray(pixel_std, images.dtype)
  return jnp.pad(x, ((0, 0), (0, image_size - h), (0, image_size - w), (0, 0)))


def _bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """(..., H, W) -> (..., H', W'), half-pixel centres, no antialiasing: torch's
  ``F.interpolate(mode="bilinear", align_corners=False)``."""
  return jax.image.resize(x, (*x.shape[:-2], *size), "linear", antialias=False)


def postprocess_masks(masks: jax.Array, input_size: tuple[int, int],
                      original_size: tuple[int, int], image_size: int = 1024) -> jax.Array:
  """Low-res mask logits (..., 4h, 4w) -> (..., H, W) of the original image.

  Upsamples to the padded input (image_size^2), crops the padding to ``input_size``
  (the resized image's size) and resizes to ``original_size`` (``Sam.postprocess_masks``).
  """
  x = _bilinear(masks, (image_size, image_size))
  x = x[..., :input_size[0], :input_size[1]]
  return _bilinear(x, tuple(original_size))


def box_predictor(module: Sam, variables, *, multimask_output: bool = False):
  """Wraps a SAM model as ``predict(images, boxes) -> (mask_logits, scores)``.

  ``images`` (B, H, W, 3) RGB in [0, 1], ``boxes`` (B, M, 4) xyxy in pixels of the
  images (passed to SAM as they are, as the reference and ``SamPredictor`` users do
  with COCO boxes). The images are resized so the longer side is
  ``module.image_size``, normalised and padded; boxes are scaled alike. Returns mask
  logits (B, M, H, W) at the images' resolution and SAM's predicted IoU (B, M) as
  scores; with ``multimask_output`` the mask with the highest predicted IoU is kept.
  Plugs into :func:`canon_jax.segmentation.segment`.
  """

  def predict(images: jax.Array, boxes: jax.Array):
    _checks.check_nhwc(images)
    b, h, w, _ = images.shape
    resized = resize_longest_side(images * 255.0, module.image_size)
    rh, rw = resized.shape[1:3]
    scaled = boxes * jnp.array([rw / w, rh / h, rw / w, rh / h], boxes.dtype)
    x = preprocess(resized, module.image_size, module.pixel_mean, module.pixel_std)
    low, iou = module.apply(variables, x, boxes=scaled, multimask_output=multimask_output)
    best = jnp.argmax(iou, axis=-1)  # (B, M)
    low = jnp.take_along_axis(low, best[..., None, None, None], axis=2)[:, :, 0]
    score = jnp.take_along_axis(iou, best[..., None], axis=2)[..., 0]
    return postprocess_masks(low, (rh, rw), (h, w), module.image_size), score

  return predict


def init_inputs(module: Sam) -> tuple[jax.ShapeDtypeStruct, ...]:
  """Shapes of ``module.init``'s inputs with every prompt kind (image, box, point with
  label, mask), so that every variable is created: ``jax.eval_shape(module.init, key,
  *init_inputs(module))``."""
  s, e = module.image_size, module.embedding_size
  return (jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32),
          jax.ShapeDtypeStruct((1, 1, 4), jnp.float32),
          jax.ShapeDtypeStruct((1, 1, 1, 2), jnp.float32),
          jax.ShapeDtypeStruct((1, 1, 1), jnp.int32),
          jax.ShapeDtypeStruct((1, 1, 4 * e, 4 * e), jnp.float32))


def torch_rules(source: str) -> tuple[rules.Rule, ...]:
  """Renaming rules of ``segment_anything``'s ``Sam.state_dict()`` names
  (:mod:`canon_jax.state_dict_rules`): ConvTranspose ``(in, out, kh, kw)`` -> ``(kh, kw,
  in, out)``, embeddings and relative position tables as they are, the Fourier matrix
  into ``constants``.

  Args:
    source: ``"segment_anything"``.
  """
  if source != "segment_anything":
    raise ValueError(f"source must be 'segment_anything' for SAM, got {source!r}")
  conv, dense, norm = rules.CONV_LEAVES, rules.DENSE_LEAVES, rules.LAYERNORM_LEAVES
  params = functools.partial(rules.leaf_to, "params")
  embedding = {"weight": params("")}  # the leaf is named by the rule's template
  conv_transpose = {"weight": params("kernel", lambda w: np.transpose(w, (2, 3, 0, 1))),
                    "bias": params("bias")}
  block = r"image_encoder\.blocks\.(\d+)"
  layer = r"mask_decoder\.transformer\.layers\.(\d+)"
  attention = r"(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
  return (
      (r"image_encoder", "image_encoder", {"pos_embed": params("pos_embed")}),
      (r"image_encoder\.patch_embed\.proj", "image_encoder/patch_embed", conv),
      (block + r"\.norm(\d)", r"image_encoder/blocks_\1/norm\2", norm),
      (block + r"\.attn", r"image_encoder/blocks_\1/attn",
       {"rel_pos_h": params("rel_pos_h"), "rel_pos_w": params("rel_pos_w")}),
      (block + r"\.attn\.(qkv|proj)", r"image_encoder/blocks_\1/attn/\2", dense),
      (block + r"\.mlp\.(lin\d)", r"image_encoder/blocks_\1/\2", dense),
      (r"image_encoder\.neck\.([02])", r"image_encoder/neck_\1", conv),
      (r"image_encoder\.neck\.([13])", r"image_encoder/neck_\1", norm),
      (r"prompt_encoder\.pe_layer", "prompt_encoder", {
          "positional_encoding_gaussian_matrix":
              rules.leaf_to("constants", "positional_encoding_gaussian_matrix")}),
      (r"prompt_encoder\.point_embeddings\.(\d)", r"prompt_encoder/point_embeddings_\1",
       embedding),
      (r"prompt_encoder\.(not_a_point_embed|no_mask_embed)", r"prompt_encoder/\1", embedding),
      (r"prompt_encoder\.mask_downscaling\.([036])", r"prompt_encoder/mask_downscaling_\1",
       conv),
      (r"prompt_encoder\.mask_downscaling\.([14])", r"prompt_encoder/mask_downscaling_\1",
       norm),
      (r"mask_decoder\.(iou_token|mask_tokens)", r"mask_decoder/\1", embedding),
      (layer + r"\." + attention + r"\.([qkv]_proj|out_proj)",
       r"mask_decoder/transformer/layers_\1/\2/\3", dense),
      (layer + r"\.(norm\d)", r"mask_decoder/transformer/layers_\1/\2", norm),
      (layer + r"\.mlp\.(lin\d)", r"mask_decoder/transformer/layers_\1/\2", dense),
      (r"mask_decoder\.transformer\.final_attn_token_to_image\.([qkv]_proj|out_proj)",
       r"mask_decoder/transformer/final_attn_token_to_image/\1", dense),
      (r"mask_decoder\.transformer\.norm_final_attn",
       "mask_decoder/transformer/norm_final_attn", norm),
      (r"mask_decoder\.output_upscaling\.([03])", r"mask_decoder/output_upscaling_\1",
       conv_transpose),
      (r"mask_decoder\.output_upscaling\.1", "mask_decoder/output_upscaling_1", norm),
      (r"mask_decoder\.output_hypernetworks_mlps\.(\d+)\.layers\.(\d+)",
       r"mask_decoder/output_hypernetworks_mlps_\1/layers_\2", dense),
      (r"mask_decoder\.iou_prediction_head\.layers\.(\d+)",
       r"mask_decoder/iou_prediction_head/layers_\1", dense),
  )
