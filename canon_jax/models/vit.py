"""Vision Transformer (ViT-B/16, S/16, Ti/16) as Flax Linen modules.

The same function as torchvision's ``vit_b_16`` and timm's ``vit_*_patch16_224``
(class-token pooling, no pre-logits layer):

1. patch embedding: a ``p x p`` stride-``p`` convolution, ``(B, H, W, 3) ->
   (B, H/p * W/p, D)`` with patches in row-major (height, then width) order;
2. the learned class token is *prepended*, then the position embedding
   ``(1, 1 + H/p * W/p, D)`` is *added* (to the class token too);
3. ``num_layers`` pre-LayerNorm encoder blocks: ``x + MHSA(LN(x))``, then
   ``x + MLP(LN(x))`` with an exact (erf) GELU; LayerNorm ``epsilon=1e-6``;
4. a final LayerNorm, the class token's features, and the ``head`` Dense layer.

Inputs are ``(B, H, W, 3)`` float32 NHWC with ``H, W`` multiples of ``patch_size``;
the position embedding is sized by the images given to ``init`` (224 x 224 for the
pretrained weights) and fixed afterwards. Normalisation: torchvision's ViT-B/16
weights expect :func:`~canon_jax.models.normalize_imagenet`; timm's augreg weights
expect ``normalize(x, INCEPTION_MEAN, INCEPTION_STD)`` (inputs in ``[-1, 1]``);
``canon_jax.convert.read_metadata`` records which. Attention uses separate
``query``/``key``/``value`` Dense layers with ``(D, D)`` kernels whose outputs are
laid out head-major (``num_heads`` blocks of ``D / num_heads``), as torch's fused
``in_proj``/``qkv`` rows are.

>>> import jax, jax.numpy as jnp
>>> model = ViTTiny(num_classes=10)  # 4 x 4 patches, width 32
>>> shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
>>> shapes["params"]["pos_embedding"].shape  # 1 class token + 4 x 4 patches
(1, 17, 32)
>>> shapes["params"]["encoderblock_0"]["attention"]["query"]["kernel"].shape
(32, 32)
"""
from __future__ import annotations

import functools
from typing import Any, Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from canon_jax import state_dict_rules as rules
from canon_jax._checks import check_nhwc

Initializer = Callable[..., jax.Array]

_DENSE_INIT = nn.initializers.xavier_uniform()  # torchvision / timm linear layers
_EPS = 1e-6


def _layer_norm(name: str, dtype: Any) -> nn.LayerNorm:
  # Two-pass variance (torch's), not E[x^2] - E[x]^2.
  return nn.LayerNorm(epsilon=_EPS, use_fast_variance=False, dtype=dtype, name=name)


class SelfAttention(nn.Module):
  """Multi-head self-attention: ``(B, N, D) -> (B, N, D)``.

  ``softmax(q k^T / sqrt(D / num_heads)) v`` per head, heads concatenated, then the
  ``out`` projection. Parameters: ``query``, ``key``, ``value``, ``out`` Dense
  layers with ``(D, D)`` kernels (input, output) and ``(D,)`` biases.

  Attributes:
    num_heads: number of heads; must divide ``D``.
    dtype: computation dtype.
  """
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, tokens, dim = x.shape
    if dim % self.num_heads:
      raise ValueError(
          f"num_heads must divide the width {dim}, got num_heads={self.num_heads}")
    dense = functools.partial(nn.Dense, dim, kernel_init=_DENSE_INIT, dtype=self.dtype)
    heads = (batch, tokens, self.num_heads, dim // self.num_heads)
    q, k, v = (dense(name=n)(x).reshape(heads) for n in ("query", "key", "value"))
    y = jax.nn.dot_product_attention(q, k, v)
    return dense(name="out")(y.reshape(batch, tokens, dim))


class MlpBlock(nn.Module):
  """``fc2(dropout(gelu(fc1(x))))`` with exact GELU: ``(B, N, D) -> (B, N, D)``.

  Attributes:
    mlp_dim: hidden width.
    dropout_rate: dropout after the GELU and after ``fc2`` (train only).
    dtype: computation dtype.
  """
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    y = nn.Dense(self.mlp_dim, kernel_init=_DENSE_INIT, dtype=self.dtype, name="fc1")(x)
    y = dropout(nn.gelu(y, approximate=False))
    y = nn.Dense(x.shape[-1], kernel_init=_DENSE_INIT, dtype=self.dtype, name="fc2")(y)
    return dropout(y)


class EncoderBlock(nn.Module):
  """Pre-LN transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``.

  Attributes:
    num_heads: attention heads.
    mlp_dim: MLP hidden width.
    dropout_rate: dropout after attention and inside the MLP (train only).
    dtype: computation dtype.
  """
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    y = _layer_norm("ln_1", self.dtype)(x)
    y = SelfAttention(self.num_heads, self.dtype, name="attention")(y)
    x = x + nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    y = _layer_norm("ln_2", self.dtype)(x)
    return x + MlpBlock(self.mlp_dim, self.dropout_rate, self.dtype, name="mlp")(y, train)


class ViT(nn.Module):
  """ViT classifier: ``(B, H, W, 3)`` NHWC images -> ``(B, num_classes)`` logits.

  Parameters: ``embedding`` (conv kernel ``(p, p, 3, D)`` HWIO), ``cls``
  ``(1, 1, D)``, ``pos_embedding`` ``(1, 1 + N, D)``, ``encoderblock_{i}``
  (``ln_1``, ``attention/{query,key,value,out}``, ``ln_2``, ``mlp/{fc1,fc2}``),
  ``encoder_norm`` and ``head`` (kernel ``(D, num_classes)``, zero-initialised as in
  torchvision so fine-tuning starts from zero logits).

  Attributes:
    patch_size: ``p``; image height and width must be multiples of it.
    hidden_size: token width ``D``.
    num_layers: encoder blocks.
    num_heads: attention heads (divides ``D``).
    mlp_dim: MLP hidden width.
    num_classes: number of logits.
    dropout_rate: dropout after the position embedding, attention and MLP layers,
      active only with ``train=True`` (then pass ``rngs={'dropout': key}``).
      0 in the pretrained torchvision/timm models.
    dtype: computation dtype; parameters stay float32, logits are float32.
  """
  patch_size: int = 16
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  num_classes: int = 1000
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  head_kernel_init: ClassVar[Initializer] = staticmethod(nn.initializers.zeros)
  head_bias_init: ClassVar[Initializer] = staticmethod(nn.initializers.zeros)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits ``(B, num_classes)`` float32 for images ``x`` of shape ``(B, H, W, 3)``."""
    check_nhwc(x, "images")
    p = self.patch_size
    if x.shape[1] % p or x.shape[2] % p:
      raise ValueError(
          f"images height and width must be multiples of patch_size={p}, got shape {x.shape}")
    x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding="VALID",
                kernel_init=nn.initializers.lecun_normal(), dtype=self.dtype, name="embedding")(x)
    batch, h, w, dim = x.shape
    x = x.reshape(batch, h * w, dim)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, dim))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (batch, 1, dim)), x], axis=1)
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, 1 + h * w, dim))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x + pos.astype(x.dtype))
    for i in range(self.num_layers):
      x = EncoderBlock(self.num_heads, self.mlp_dim, self.dropout_rate, self.dtype,
                       name=f"encoderblock_{i}")(x, train)
    x = _layer_norm("encoder_norm", self.dtype)(x)[:, 0]
    x = nn.Dense(self.num_classes, kernel_init=self.head_kernel_init,
                 bias_init=self.head_bias_init, dtype=self.dtype, name="head")(x)
    return x.astype(jnp.float32)


ViTB16 = functools.partial(ViT, patch_size=16, hidden_size=768, num_layers=12, num_heads=12,
                           mlp_dim=3072)
"""ViT-B/16 (torchvision ``vit_b_16``, timm ``vit_base_patch16_224``), 86.6 M parameters."""
ViTS16 = functools.partial(ViT, patch_size=16, hidden_size=384, num_layers=12, num_heads=6,
                           mlp_dim=1536)
"""ViT-S/16 (timm ``vit_small_patch16_224``), 22.1 M parameters."""
ViTTi16 = functools.partial(ViT, patch_size=16, hidden_size=192, num_layers=12, num_heads=3,
                            mlp_dim=768)
"""ViT-Ti/16 (timm ``vit_tiny_patch16_224``), 5.7 M parameters."""
ViTTiny = functools.partial(ViT, patch_size=4, hidden_size=32, num_layers=2, num_heads=2,
                            mlp_dim=64)
"""Test-sized ViT: 4 x 4 patches, width 32, 2 blocks, 2 heads (~30 k parameters)."""


def torch_rules(source: str) -> tuple[rules.Rule, ...]:
  """Renaming rules of ``source``'s ViT state dicts (:mod:`canon_jax.state_dict_rules`).

  Args:
    source: ``"torchvision"`` (``torchvision.models.vit_*``) or ``"timm"``
      (``timm``'s ``vit_*_patch16_224``).
  """
  dense, norm = rules.DENSE_LEAVES, rules.LAYERNORM_LEAVES
  params = functools.partial(rules.leaf_to, "params")
  if source == "torchvision":
    block = r"encoder\.layers\.encoder_layer_(\d+)"
    return (
        (r"", "", {"class_token": params("cls")}),
        (r"conv_proj", "embedding", rules.CONV_LEAVES),
        (r"encoder", "", {"pos_embedding": params("pos_embedding")}),
        (block + r"\.ln_(\d)", r"encoderblock_\1/ln_\2", norm),
        (block + r"\.self_attention", r"encoderblock_\1/attention", {
            "in_proj_weight": rules.split_qkv("kernel", rules.out_in_to_in_out),
            "in_proj_bias": rules.split_qkv("bias"),
        }),
        (block + r"\.self_attention\.out_proj", r"encoderblock_\1/attention/out", dense),
        # "linear_1"/"linear_2": MLPBlock names of checkpoints saved before torchvision 0.14.
        (block + r"\.mlp\.(?:0|linear_1)", r"encoderblock_\1/mlp/fc1", dense),
        (block + r"\.mlp\.(?:3|linear_2)", r"encoderblock_\1/mlp/fc2", dense),
        (r"encoder\.ln", "encoder_norm", norm),
        (r"heads\.head", "head", dense),
    )
  if source == "timm":
    return (
        (r"", "", {"cls_token": params("cls"), "pos_embed": params("pos_embedding")}),
        (r"patch_embed\.proj", "embedding", rules.CONV_LEAVES),
        (r"blocks\.(\d+)\.norm(\d)", r"encoderblock_\1/ln_\2", norm),
        (r"blocks\.(\d+)\.attn\.qkv", r"encoderblock_\1/attention", {
            "weight": rules.split_qkv("kernel", rules.out_in_to_in_out),
            "bias": rules.split_qkv("bias"),
        }),
        (r"blocks\.(\d+)\.attn\.proj", r"encoderblock_\1/attention/out", dense),
        (r"blocks\.(\d+)\.mlp\.fc(\d)", r"encoderblock_\1/mlp/fc\2", dense),
        (r"norm", "encoder_norm", norm),
        (r"head", "head", dense),
    )
  raise ValueError(f"source must be 'torchvision' or 'timm' for a ViT, got {source!r}")
