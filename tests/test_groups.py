import itertools

import numpy as np
import pytest

from canon_jax import groups

ALL = [groups.cyclic(n) for n in (1, 2, 4, 8)] + [groups.dihedral(n) for n in (1, 2, 4, 8)]


@pytest.mark.parametrize("g", ALL, ids=lambda g: g.name)
def test_group_axioms(g):
  e = range(g.order)
  for a in e:
    assert g.compose(0, a) == a == g.compose(a, 0)
    assert g.compose(a, g.inverse(a)) == 0 == g.compose(g.inverse(a), a)
  for a, b, c in itertools.product(e, e, e):
    assert g.compose(g.compose(a, b), c) == g.compose(a, g.compose(b, c))


def test_dihedral_element_order_and_law():
  d4 = groups.dihedral(4)
  assert d4.order == 8 and d4.reflections and d4.name == "D4"
  np.testing.assert_allclose(d4.angles, np.tile(np.arange(4) * np.pi / 2, 2))
  np.testing.assert_array_equal(d4.flips, [False] * 4 + [True] * 4)
  # flip then rotate: element 4 + k = rot k o flip.
  for k in range(4):
    assert d4.compose(k, 4) == 4 + k
  # flip o rot k = rot(-k) o flip; flips are involutions.
  assert d4.compose(4, 1) == 4 + 3
  assert all(d4.inverse(4 + k) == 4 + k for k in range(4))
  assert groups.cyclic(8).inverse(3) == 5


@pytest.mark.parametrize("g", ALL, ids=lambda g: g.name)
def test_regular_permutation_is_an_action(g):
  # (a . (b . f)) == (ab) . f with (g . f)[h] = f[perm_g[h]].
  f = np.random.default_rng(0).normal(size=g.order)
  for a, b in itertools.product(range(g.order), repeat=2):
    lhs = (f[g.regular_permutation(b)])[g.regular_permutation(a)]
    rhs = f[g.regular_permutation(g.compose(a, b))]
    np.testing.assert_array_equal(lhs, rhs)


def test_from_name():
  assert groups.from_name("C8") == groups.cyclic(8)
  assert groups.from_name("d4") == groups.dihedral(4)
  assert groups.from_name(groups.cyclic(3)) == groups.cyclic(3)
  assert hash(groups.from_name("C8")) == hash(groups.cyclic(8))
  for bad in ["C0", "Q8", "SO2", "C", "D-1", ""]:
    with pytest.raises(ValueError, match="group must be"):
      groups.from_name(bad)
  with pytest.raises(TypeError, match="group must be a str"):
    groups.from_name(8)
  with pytest.raises(ValueError, match="n must be >= 1"):
    groups.cyclic(0)
  with pytest.raises(ValueError, match=r"in \[0, 8\)"):
    groups.cyclic(8).compose(8, 0)


def test_exact_groups_and_cos_sin():
  assert groups.cyclic(4).exact_on_grid and groups.dihedral(2).exact_on_grid
  assert not groups.cyclic(8).exact_on_grid
  c, s = groups.cyclic(8).cos_sin()
  assert c[2] == 0.0 and s[2] == 1.0 and c[4] == -1.0 and s[4] == 0.0
