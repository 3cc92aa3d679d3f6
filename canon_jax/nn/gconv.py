"""Rotated-filter group convolutions for C_n and D_n on NHWC images.

Feature layout: a regular feature map is (B, H, W, C, |G|); inside a convolution it
is flattened to (B, H, W, C*|G|) with the group axis fastest (index c*|G| + g).

Every layer is a single correlation (``lax.conv_general_dilated``; a matmul for
1 x 1 kernels) whose kernel is assembled at trace time from the parameters; the
steerable lift instead correlates the image with its fixed basis and mixes the
responses with its coefficients in a matmul (see :class:`LiftingConv`). Large 1 x 1
layers of C_n (n even) run the same matrix block-diagonalised by a real Fourier basis
of the group axis (``2/n`` of the multiply-adds; ``_fourier_pointwise``):

* **lifting layer**: output element ``h`` correlates the image with ``h . psi``
  (the base filter transformed like an image: mirrored, then rotated
  counter-clockwise), so ``lift(g . x)[..., h] = lift(x)[..., g^-1 h]`` at the
  rotated position.
* **group-to-group layer**: output element ``h`` uses the filter bank
  ``(h . Psi)[:, :, :, h^-1 g']`` for input element ``g'`` (spatial transform and a
  static gather on the input group axis).

Filter parametrisations (``basis``):

* ``"pixel"``: free k x k weights moved by ``jnp.rot90``/flips. Exact, but only
  defined for groups whose rotations are multiples of 90 degrees (C1, C2, C4, D1,
  D2, D4). Also used for 1 x 1 kernels, which rotation leaves alone.
* ``"steerable"``: each filter is a learned combination of a fixed, band-limited
  basis: radial Gaussian rings times circular harmonics ``cos/sin(m phi)`` for
  ``m <= max_frequency`` (ring 0 uses ``(r/sigma)^m`` so that it is smooth at the
  centre; the harmonics of outer rings are 0 at the centre pixel, where phi is
  undefined; with one ring and frequency 1 this is a Gaussian and its two first
  derivatives). The transformed copy ``h . psi`` evaluates the basis at the
  transformed grid coordinates (precomputed once, in numpy), instead of resampling
  pixels, so 45-degree copies keep their strength (the reference's bilinear
  filter rotation loses ~39% of the L2 norm and makes its C8 behave like C4).
* ``"auto"``: pixel where exact, steerable otherwise.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from canon_jax import _checks
from canon_jax.groups import DiscreteGroup, from_name
from canon_jax.nn.conv import pointwise
from canon_jax.transforms import _exact, _source_coords

Basis = Literal["auto", "pixel", "steerable"]


def _resolve_basis(basis: str, group: DiscreteGroup, kernel_size: int) -> str:
  _checks.check_choice(basis, "basis", ("auto", "pixel", "steerable"))
  if kernel_size == 1:
    return "pixel"
  if basis == "auto":
    return "pixel" if group.exact_on_grid else "steerable"
  if basis == "pixel" and not group.exact_on_grid:
    raise ValueError(
        f"basis='pixel' is only exact for groups of 90-degree rotations (C1, C2, "
        f"C4, D1, D2, D4); got {group.name}. Use basis='steerable'.")
  return basis


def _check_kernel(kernel_size: int) -> None:
  if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
    raise ValueError(
        f"kernel_size must be a positive odd int (the filter needs a centre pixel "
        f"to rotate about); got {kernel_size!r}.")


@dataclasses.dataclass(frozen=True)
class FilterBasis:
  """How the k x k filters of a group-conv layer are parametrised (hashable, static).

  Attributes:
    kind: "pixel" (free k x k weights moved by ``jnp.rot90``/flips; exact, only for
      groups of 90-degree rotations), "steerable" (learned combination of the fixed
      basis of :func:`steerable_basis`), or "auto" (pixel where exact, steerable
      otherwise). 1 x 1 kernels are always pixel.
    max_frequency: highest circular harmonic m of the steerable basis (1 by
      default; 2 and more alias on small square grids).
    num_rings: radial Gaussian rings of the steerable basis.
    sigma: ring width in pixels.
  """
  kind: Basis = "auto"
  max_frequency: int = 1
  num_rings: int = 1
  sigma: float = 1.0

  def __post_init__(self):
    _checks.check_choice(self.kind, "FilterBasis.kind", ("auto", "pixel", "steerable"))
    if self.max_frequency < 0 or self.num_rings < 1 or not self.sigma > 0:
      raise ValueError(f"FilterBasis needs max_frequency >= 0, num_rings >= 1 and "
                       f"sigma > 0; got {self.max_frequency}, {self.num_rings} and "
                       f"{self.sigma}.")

  def resolve(self, group: DiscreteGroup, kernel_size: int) -> str:
    """"pixel" or "steerable": the parametrisation used for ``group`` at ``kernel_size``."""
    return _resolve_basis(self.kind, group, kernel_size)

  def steerable(self, group: DiscreteGroup, kernel_size: int) -> np.ndarray:
    """:func:`steerable_basis` of these settings, (|G|, k, k, nb)."""
    return steerable_basis(group, kernel_size, self.max_frequency, self.num_rings,
                           self.sigma)

  def steering(self, group: DiscreteGroup, kernel_size: int) -> np.ndarray | None:
    """:func:`_steering_matrices` of these settings, (|G|, nb, nb) or None."""
    return _steering_matrices(group, kernel_size, self.max_frequency, self.num_rings,
                              self.sigma)


@functools.lru_cache(maxsize=64)
def steerable_basis(group: DiscreteGroup, kernel_size: int, max_frequency: int = 1,
                    num_rings: int = 1, sigma: float = 1.0) -> np.ndarray:
  """The filter basis sampled at the grid transformed by every group element.

  Args:
    group: the group.
    kernel_size: odd k.
    max_frequency: highest circular harmonic m (frequency 2 and more alias on a
      small square grid; 1 is the default).
    num_rings: radial Gaussian rings at radii j * (k - 1) / (2 * num_rings),
      j = 0, ..., num_rings - 1 (pixels).
    sigma: ring width in pixels (1.0 by default: on smooth inputs a 45-degree
      rotation then shifts a random C8 network's argmax by exactly one for ~99% of
      inputs, 98% with 0.8).

  Returns:
    (|G|, k, k, nb) float32: ``basis[h, :, :, b] = phi_b(h^-1 . grid)``, each
    ``phi_b`` normalised to unit L2 norm on the untransformed grid. Element 0 is the
    identity, so ``basis[0]`` is the plain basis.
  """
  _check_kernel(kernel_size)
  if max_frequency < 0 or num_rings < 1:
    raise ValueError(f"max_frequency must be >= 0 and num_rings >= 1; got "
                     f"{max_frequency} and {num_rings}.")
  cos, sin = group.cos_sin()
  rows, cols = _source_coords(kernel_size, kernel_size, cos, sin, group.flips, xp=np)
  c = (kernel_size - 1) / 2.0
  u = np.asarray(cols, np.float64) - c          # right
  v = c - np.asarray(rows, np.float64)          # up
  r = np.hypot(u, v)
  phi = np.arctan2(v, u)                        # counter-clockwise from +x
  funcs = []
  for ring in range(num_rings):
    if ring == 0:
      profile = lambda m: (r / sigma) ** m * np.exp(-r**2 / (2 * sigma**2))
    else:
      radius = ring * (kernel_size - 1) / (2 * num_rings)
      # Harmonics (m >= 1) are 0 at r = 0, where phi is undefined: a circular
      # harmonic must vanish there to rotate as one (and to be steerable).
      profile = lambda m, radius=radius: np.exp(-(r - radius)**2 / (2 * sigma**2)) * (
          1.0 if m == 0 else (r > 1e-9))
    funcs.append(profile(0))
    for m in range(1, max_frequency + 1):
      funcs += [profile(m) * np.cos(m * phi), profile(m) * np.sin(m * phi)]
  basis = np.stack(funcs, axis=-1)             # (|G|, k, k, nb)
  norms = np.sqrt((basis[0] ** 2).sum(axis=(0, 1)))
  keep = norms > 1e-6                          # e.g. m >= 1 vanish on a 1x1 grid
  return (basis[..., keep] / norms[keep]).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _steering_matrices(group: DiscreteGroup, kernel_size: int, max_frequency: int = 1,
                       num_rings: int = 1, sigma: float = 1.0) -> np.ndarray | None:
  """(|G|, nb, nb) matrices ``T`` with ``basis[h] = basis[0] @ T[h]``, or None.

  A transformed harmonic pair ``(cos, sin)(m phi)`` is a rotation (for mirrored
  elements, a reflection) of the untransformed pair, so the copies of the basis are
  fixed linear combinations of its untransformed functions (up to each function's
  normalisation on the grid), for any number of rings: every harmonic vanishes at the
  centre pixel, which every element fixes. Found by least squares and accepted only
  if it reproduces every copy to 1e-5 (else None; kept as a guard).
  """
  basis = steerable_basis(group, kernel_size, max_frequency, num_rings,
                          sigma).astype(np.float64)
  n, nb = basis.shape[0], basis.shape[-1]
  plain = basis[0].reshape(-1, nb)
  steer = np.stack([np.linalg.lstsq(plain, basis[h].reshape(-1, nb), rcond=None)[0]
                    for h in range(n)])
  if np.abs(np.einsum("ti,hij->htj", plain, steer)
            - basis.reshape(n, -1, nb)).max() > 1e-5:
    return None
  return steer.astype(np.float32)


def _spatial_copies_pixel(w, group: DiscreteGroup):
  """(k, k, ...) filter -> (|G|, k, k, ...): h . w for every element h."""
  return jnp.stack([
      _exact(w, int(group.rotation_index[h]) * 4 // group.n, bool(group.flips[h]),
             axes=(0, 1)) for h in range(group.order)])


class _FilterBank(nn.Module):
  """Holds the parameters of a filter bank and returns its |G| transformed copies.

  ``shape`` is the trailing filter shape (in, ..., out). Returns
  (|G|, k, k, *shape).
  """
  group: DiscreteGroup
  kernel_size: int
  shape: tuple[int, ...]
  fan_in: int
  filters: FilterBasis = FilterBasis()

  @nn.compact
  def __call__(self, expand: bool = True):
    """The copies (|G|, k, k, *shape); with ``expand=False`` and a steerable basis,
    ``(basis (|G|, k, k, nb), coefficients (nb, *shape))`` instead (not multiplied)."""
    kind = self.filters.resolve(self.group, self.kernel_size)
    k = self.kernel_size
    if kind == "pixel":
      w = self.param("kernel", _he_init(2.0 / self.fan_in), (k, k) + self.shape)
      return _spatial_copies_pixel(w, self.group)
    basis = jnp.asarray(self.filters.steerable(self.group, k))
    nb = basis.shape[-1]
    # Unit-norm basis functions: a filter's energy is sum(coeffs^2); match the
    # energy of a He-initialised k x k pixel filter.
    coeffs = self.param("coefficients", _he_init(2.0 * k * k / (self.fan_in * nb)),
                        (nb,) + self.shape)
    return (basis, coeffs) if not expand else _expand((basis, coeffs))


def _expand(bank):
  """``(basis, coefficients)`` -> the filter copies (|G|, k, k, *shape); copies pass."""
  if isinstance(bank, tuple):
    basis, coeffs = bank
    return jnp.tensordot(basis, coeffs, axes=(-1, 0))
  return bank


def _he_init(variance: float):
  """Truncated normal (+-2 std) with the given variance."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) * np.sqrt(
        variance) / 0.8796256
  return init


def _conv(x, kernel, padding="SAME"):
  """Stride-1 correlation, NHWC x HWIO (XLA's convolution and its own gradients)."""
  return lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def add_channel_bias(f: jax.Array, bias: jax.Array) -> jax.Array:
  """``f + bias[:, None]``: regular features (B, H, W, C, |G|) plus one bias per
  channel C, shared over the group axis (so the sum stays equivariant)."""
  return f + bias[:, None]


class _GroupFilterLayer(nn.Module):
  """Fields and helpers shared by the lifting and group-to-group layers."""
  group: DiscreteGroup | str
  features: int
  kernel_size: int = 5
  use_bias: bool = True
  filters: FilterBasis = FilterBasis()

  def _filter_copies(self, group: DiscreteGroup, shape: tuple[int, ...], fan_in: int,
                     expand: bool = True):
    """(|G|, k, k, *shape): the filter bank transformed by every element (see
    ``_FilterBank`` for ``expand=False``)."""
    _check_kernel(self.kernel_size)
    return _FilterBank(group, self.kernel_size, shape, fan_in=fan_in,
                       filters=self.filters, name="filters")(expand)

  def _add_bias(self, y):
    """Adds one bias per output channel, shared over the group axis (equivariant)."""
    if not self.use_bias:
      return y
    return add_channel_bias(y, self.param("bias", nn.initializers.zeros,
                                          (self.features,)))


class LiftingConv(_GroupFilterLayer):
  """Image (B, H, W, C_in) -> regular features (B, H, W, features, |G|).

  ``out[..., o, h]`` correlates the image with the base filter transformed by h.
  Stride 1, odd kernel. ``padding="SAME"`` (default) zero-pads (k - 1) / 2 pixels on
  every side and keeps H x W; ``"VALID"`` does not pad: (H - k + 1) x (W - k + 1)
  outputs (equiadapt's custom networks). Both pad symmetrically, so both are exactly
  equivariant under the grid's rotations by 90 degrees and its reflections.

  With a steerable basis of nb functions, every copy ``h . psi_j`` is a fixed
  combination of the untransformed ``psi`` (``_steering_matrices``). When
  ``nb * (k^2 + |G| features) < k^2 |G| features`` the image is therefore first
  correlated with the nb untransformed functions (a constant convolution, one input
  channel at a time) and one matmul mixes the responses into all |G| outputs
  (``out[..., o, h] = sum_{c, j} corr(x_c, h . psi_j) a[j, c, o]``, the same sum in
  another order): fewer FLOPs, and no filter gradient of a k x k convolution.
  """

  padding: Literal["SAME", "VALID"] = "SAME"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    group = from_name(self.group)
    if x.ndim != 4:
      raise ValueError(f"x must be (B, H, W, C); got shape {x.shape}.")
    _checks.check_choice(self.padding, "padding", ("SAME", "VALID"))
    c_in, n, k = x.shape[-1], group.order, self.kernel_size
    bank = self._filter_copies(group, (c_in, self.features), c_in * k * k, expand=False)
    if self.padding == "VALID" and min(x.shape[1:3]) < k:
      raise ValueError(f"padding='VALID' needs H, W >= kernel_size={k}; got "
                       f"{x.shape[1]}x{x.shape[2]}.")
    steer = self.filters.steering(group, k) if isinstance(bank, tuple) else None
    if steer is not None and bank[0].shape[-1] * (k * k + n * self.features) < (
        k * k * n * self.features):
      basis, coeffs = bank
      nb = basis.shape[-1]
      # Correlate every input channel with the untransformed basis only (a constant
      # block-diagonal k x k kernel, c_in -> c_in nb), then one matmul mixes the
      # responses into all |G| outputs: mixing[(c, i), (o, h)] =
      # sum_j T[h, i, j] coeffs[j, c, o], because basis[h] = basis[0] @ T[h].
      plain = np.einsum("xyi,cd->xycdi", self.filters.steerable(group, k)[0],
                        np.eye(c_in, dtype=np.float32)).reshape(k, k, c_in, c_in * nb)
      z = _conv(x, jnp.asarray(plain, x.dtype), self.padding)
      mixing = jnp.einsum("hij,jco->cioh", jnp.asarray(steer), coeffs).reshape(
          c_in * nb, self.features * n)
      y = pointwise(z, mixing.astype(x.dtype))
      return self._add_bias(y.reshape(y.shape[:3] + (self.features, n)))
    copies = _expand(bank)
    kernel = jnp.transpose(copies, (1, 2, 3, 4, 0)).reshape(k, k, c_in, self.features * n)
    y = _conv(x, kernel.astype(x.dtype), self.padding)
    return self._add_bias(y.reshape(y.shape[:3] + (self.features, n)))


class GroupConv(_GroupFilterLayer):
  """Regular features (B, H, W, C_in, |G|) -> (B, H, W, features, |G|).

  ``out[..., o, h] = sum_{c, g'} corr(f[..., c, g'], (h . Psi)[:, :, c, h^-1 g', o])``.
  """
  kernel_size: int = 1

  @nn.compact
  def __call__(self, f: jax.Array) -> jax.Array:
    group = from_name(self.group)
    n = group.order
    if f.ndim != 5 or f.shape[-1] != n:
      raise ValueError(f"f must be regular features (B, H, W, C, |G|={n}); got shape "
                       f"{f.shape}.")
    c_in, k = f.shape[-2], self.kernel_size
    copies = self._filter_copies(group, (c_in, n, self.features), c_in * n * k * k)
    perm = jnp.asarray(group.table[group.inverses])          # perm[h, g'] = h^-1 g'
    kernel = copies[jnp.arange(n)[:, None], :, :, :, perm]   # (|G|h, |G|g', k, k, in, out)
    kernel = jnp.transpose(kernel, (2, 3, 4, 1, 5, 0)).reshape(
        k, k, c_in * n, self.features * n)
    if k == 1 and _use_fourier(group, f.shape, self.features):
      y = _fourier_pointwise(f, kernel[0, 0].astype(f.dtype), self.features)
    else:
      y = _conv(f.reshape(f.shape[:3] + (c_in * n,)), kernel.astype(f.dtype)).reshape(
          f.shape[:3] + (self.features, n))
    return self._add_bias(y)


# A 1 x 1 layer of C_n is a convolution over the group axis: its (C_in n, C_out n)
# matrix is block-circulant, and in an orthogonal real Fourier basis of the group axis
# it is block-diagonal, n/2 blocks of (2 C_in, 2 C_out) (frequencies 0 and n/2 share a
# block; 1 .. n/2 - 1 are (cos, sin) pairs): n/2 * 4 C_in C_out multiply-adds per pixel
# instead of n^2 C_in C_out (2/n of the work). Layers with at least this many dense
# multiply-adds use it; smaller ones keep the plain matmul (fewer ops to compile).
_MIN_FOURIER_MACS = 50_000_000


def _use_fourier(group: DiscreteGroup, shape: tuple[int, ...], c_out: int) -> bool:
  """Whether a 1 x 1 layer on features of ``shape`` (B, H, W, C_in, n) runs
  :func:`_fourier_pointwise`: C_n, n even and >= 4, and a large enough layer."""
  n, c_in = group.order, shape[-2]
  macs = int(np.prod(shape[:3])) * c_in * n * c_out * n
  return (not group.reflections and n % 2 == 0 and n >= 4
          and macs >= _MIN_FOURIER_MACS)


@functools.lru_cache(maxsize=16)
def _real_fourier_basis(n: int) -> np.ndarray:
  """(n, n) orthogonal real Fourier basis of functions on C_n (n even).

  Column pairs ``(2j, 2j + 1)``: j = 0 holds the constant and ``(-1)^g``; j = 1 ..
  n/2 - 1 hold ``cos`` and ``sin`` of ``2 pi j g / n``.
  """
  g = np.arange(n)
  cols = [np.full(n, 1.0 / np.sqrt(n)), (-1.0) ** g / np.sqrt(n)]
  for j in range(1, n // 2):
    cols += [np.sqrt(2.0 / n) * np.cos(2 * np.pi * j * g / n),
             np.sqrt(2.0 / n) * np.sin(2 * np.pi * j * g / n)]
  return np.stack(cols, axis=1).astype(np.float32)


def _fourier_pointwise(f: jax.Array, matrix: jax.Array, c_out: int) -> jax.Array:
  """``pointwise(f.reshape(..., C_in n), matrix)`` for a block-circulant C_n matrix.

  Args:
    f: (B, H, W, C_in, n) regular features.
    matrix: (C_in n, C_out n), rows and columns indexed ``c * n + g``, circulant in
      the group indices (a 1 x 1 C_n group convolution).
    c_out: C_out.

  Returns:
    (B, H, W, C_out, n).
  """
  lead, c_in, n = f.shape[:3], f.shape[-2], f.shape[-1]
  q = jnp.asarray(_real_fourier_basis(n), f.dtype)
  half = n // 2
  # The matrix in the Fourier basis; only the diagonal (2 x 2 frequency) blocks are
  # nonzero: blocks[j, (r, c), (s, o)].
  four = jnp.einsum("gi,cgoh,hj->cioj", q, matrix.reshape(c_in, n, c_out, n), q)
  four = four.reshape(c_in, half, 2, c_out, half, 2)
  diag = jnp.arange(half)
  blocks = jnp.transpose(four[:, diag, :, :, diag, :], (0, 2, 1, 4, 3)).reshape(
      half, 2 * c_in, 2 * c_out)
  p = int(np.prod(lead))
  coeffs = (f.reshape(p * c_in, n) @ q).reshape(p, c_in, half, 2)
  coeffs = jnp.transpose(coeffs, (2, 0, 3, 1)).reshape(half, p, 2 * c_in)
  mixed = jnp.matmul(coeffs, blocks).reshape(half, p, 2, c_out)
  mixed = jnp.transpose(mixed, (1, 3, 0, 2)).reshape(p * c_out, n)
  return (mixed @ q.T).reshape(lead + (c_out, n))


class GroupBatchNorm(nn.Module):
  """Batch norm for regular features: statistics per channel over (B, H, W, |G|)."""
  momentum: float = 0.9
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, f: jax.Array, train: bool) -> jax.Array:
    return nn.BatchNorm(use_running_average=not train, axis=-2,
                        momentum=self.momentum, epsilon=self.epsilon)(f)


def group_avg_pool(f: jax.Array) -> jax.Array:
  """2x2 average pooling, stride 2, of (B, H, W, C, |G|) with even H and W.

  Exactly commutes with 90-degree rotations and flips (the 2x2 cells map to cells).
  """
  b, h, w = f.shape[:3]
  if h % 2 or w % 2:
    raise ValueError(f"group_avg_pool needs even H and W; got {h}x{w}.")
  return f.reshape(b, h // 2, 2, w // 2, 2, *f.shape[3:]).mean(axis=(2, 4))


@functools.lru_cache(maxsize=16)
def _gaussian_taps(sigma: float) -> np.ndarray:
  """Normalised 1-D Gaussian taps of width ``sigma`` pixels, radius ceil(2 sigma)."""
  radius = max(1, int(np.ceil(2 * sigma)))
  t = np.arange(-radius, radius + 1, dtype=np.float64)
  taps = np.exp(-t**2 / (2 * sigma**2))
  return (taps / taps.sum()).astype(np.float32)


def gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
  """Isotropic Gaussian blur of (B, H, W, C) maps, ``sigma`` in pixels (0: none).

  Separable, zero padding, radius ceil(2 sigma): the kernel is symmetric under the
  grid's 90-degree rotations and flips (so the blur commutes exactly with them) and
  nearly isotropic (so it commutes approximately with any rotation).
  """
  if sigma <= 0:
    return x
  taps = jnp.asarray(_gaussian_taps(float(sigma)), x.dtype)
  r = (taps.shape[0] - 1) // 2
  for axis in (1, 2):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    xp = jnp.pad(x, pad)
    x = sum(taps[i] * jax.lax.slice_in_dim(xp, i, i + x.shape[axis], axis=axis)
            for i in range(taps.shape[0]))
  return x


def group_blur_pool(f: jax.Array, sigma: float = 1.0) -> jax.Array:
  """:func:`gaussian_blur`, then 2x2 average pooling, stride 2: (B, H, W, C, |G|)
  -> (B, H/2, W/2, C, |G|), H and W even.

  Commutes exactly with the grid's 90-degree rotations and flips, as
  :func:`group_avg_pool` does; because the blur is nearly isotropic and removes the
  frequencies that stride 2 would alias, it also commutes approximately with
  45-degree rotations, which plain 2x2 pooling does not. ``sigma=0`` is plain 2x2
  average pooling.
  """
  b, h, w = f.shape[:3]
  blurred = gaussian_blur(f.reshape(b, h, w, -1), sigma).reshape(f.shape)
  return group_avg_pool(blurred)


def pool_to_logits(f: jax.Array) -> jax.Array:
  """Regular features (B, H, W, C, |G|) -> group logits (B, |G|): mean over H, W, C."""
  return jnp.mean(f, axis=(1, 2, 3))
