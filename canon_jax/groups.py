"""Finite planar groups C_n and D_n: elements, composition, inverses, regular action.

Conventions (used everywhere in canon_jax):

* Element ``k`` for ``0 <= k < n`` is the counter-clockwise rotation by ``2*pi*k/n``
  radians, "counter-clockwise" as an image is displayed (row 0 at the top).
* For D_n, element ``n + k`` is "horizontal flip (mirror the width axis), then
  rotation k". Element 0 is the identity in both groups.
* ``compose(a, b)`` is ``a o b``: apply ``b`` first, then ``a``.
* A regular feature map ``f`` carries a group axis indexed by elements; the group acts
  on it by ``(g . f)[h] = f[g^-1 h]`` (after the spatial transform). The index array
  ``regular_permutation(g)`` gives ``idx`` with ``(g . f)[..., h] = f[..., idx[h]]``.

All tables are small numpy arrays computed once; the group object is hashable and
immutable, so it can be a static field of a Flax module or a static jit argument.
"""
from __future__ import annotations

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class DiscreteGroup:
  """The cyclic group C_n (``reflections=False``) or dihedral group D_n (True).

  Attributes:
    n: number of rotations (>= 1).
    reflections: whether the group contains the horizontal flip.

  >>> g = dihedral(4)
  >>> g.order, g.name, g.compose(1, 4), g.inverse(1)
  (8, 'D4', 5, 3)
  """

  n: int
  reflections: bool = False

  def __post_init__(self):
    if not isinstance(self.n, (int, np.integer)) or isinstance(self.n, bool):
      raise TypeError(f"n must be an int; got {type(self.n).__name__} ({self.n!r}).")
    if self.n < 1:
      raise ValueError(f"n must be >= 1 (number of rotations); got n={self.n}.")

  # -- basic facts ---------------------------------------------------------------

  @property
  def name(self) -> str:
    return f"{'D' if self.reflections else 'C'}{self.n}"

  @property
  def order(self) -> int:
    """|G|: n for C_n, 2n for D_n."""
    return 2 * self.n if self.reflections else self.n

  @property
  def rotation_index(self) -> np.ndarray:
    """(|G|,) int: the rotation k of each element (element = rot k after flip?)."""
    return np.arange(self.order) % self.n

  @property
  def flips(self) -> np.ndarray:
    """(|G|,) bool: whether each element contains the horizontal flip."""
    return np.arange(self.order) >= self.n

  @property
  def angles(self) -> np.ndarray:
    """(|G|,) float64 rotation angle of each element, radians, counter-clockwise."""
    return 2.0 * np.pi * self.rotation_index / self.n

  @property
  def exact_on_grid(self) -> bool:
    """True when every rotation is a multiple of 90 degrees (exact on pixels)."""
    return 4 % self.n == 0

  def cos_sin(self) -> tuple[np.ndarray, np.ndarray]:
    """(|G|,) cosines and sines of the angles, exact (0, +-1) at multiples of 90°."""
    c, s = np.cos(self.angles), np.sin(self.angles)
    return _snap(c), _snap(s)

  # -- group law -----------------------------------------------------------------

  def compose(self, a, b):
    """``a o b`` (apply b, then a). Works on ints and on integer arrays."""
    if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
      self._check_element(a, "a")
      self._check_element(b, "b")
      return int(self.table[a, b])
    return jnp.asarray(self.table)[a, b]

  def inverse(self, a):
    """The inverse element. Works on ints and on integer arrays."""
    if isinstance(a, (int, np.integer)):
      self._check_element(a, "a")
      return int(self.inverses[a])
    return jnp.asarray(self.inverses)[a]

  @functools.cached_property
  def table(self) -> np.ndarray:
    """(|G|, |G|) int32 composition table: ``table[a, b] = a o b``."""
    k = self.rotation_index
    f = self.flips.astype(np.int64)
    # (R_a F^fa)(R_b F^fb) = R_a R_{(-1)^fa b} F^{fa+fb}.
    rot = (k[:, None] + np.where(f[:, None] == 1, -1, 1) * k[None, :]) % self.n
    flip = (f[:, None] + f[None, :]) % 2
    return (rot + self.n * flip).astype(np.int32)

  @functools.cached_property
  def inverses(self) -> np.ndarray:
    """(|G|,) int32: ``inverses[a]`` is a^-1 (flips are involutions in D_n)."""
    return np.argmax(self.table == 0, axis=1).astype(np.int32)

  def regular_permutation(self, g) -> np.ndarray | jax.Array:
    """Index ``idx`` with ``(g . f)[..., h] = f[..., idx[h]]``, ``idx[h] = g^-1 h``.

    ``g`` may be an int (returns a (|G|,) numpy array) or an integer array of shape
    (B,) (returns (B, |G|)).
    """
    if isinstance(g, (int, np.integer)):
      self._check_element(g, "g")
      return self.table[self.inverses[g]]
    return jnp.asarray(self.table)[jnp.asarray(self.inverses)[g]]

  def _check_element(self, a, name):
    if not 0 <= int(a) < self.order:
      raise ValueError(
          f"{name} must be a group element index in [0, {self.order}) for "
          f"{self.name}; got {a}.")

  def __repr__(self):
    return f"DiscreteGroup({self.name}, order={self.order})"


def _snap(x: np.ndarray) -> np.ndarray:
  """Rounds values within 1e-9 of -1, 0 or 1 to those exact numbers."""
  r = np.round(x)
  return np.where(np.abs(x - r) < 1e-9, r, x)


def cyclic(n: int) -> DiscreteGroup:
  """C_n: the n rotations by multiples of 2*pi/n (counter-clockwise)."""
  return DiscreteGroup(n, reflections=False)


def dihedral(n: int) -> DiscreteGroup:
  """D_n: C_n plus n reflections (element n + k: horizontal flip, then rotation k)."""
  return DiscreteGroup(n, reflections=True)


_NAME = re.compile(r"^([CD])(\d+)$")


def from_name(name: str | DiscreteGroup) -> DiscreteGroup:
  """Parses "C8", "D4", ... (case-insensitive). A DiscreteGroup is returned as is.

  Raises:
    ValueError: for unknown names such as "C0", "Q8" or "SO2".
  """
  if isinstance(name, DiscreteGroup):
    return name
  if not isinstance(name, str):
    raise TypeError(f"group must be a str such as 'C8' or a DiscreteGroup; got "
                    f"{type(name).__name__}.")
  m = _NAME.match(name.strip().upper())
  if m is None or int(m.group(2)) < 1:
    raise ValueError(
        f"group must be 'C<n>' (rotations) or 'D<n>' (rotations and reflections) "
        f"with n >= 1, e.g. 'C8' or 'D4'; got {name!r}.")
  return DiscreteGroup(int(m.group(2)), reflections=m.group(1) == "D")
