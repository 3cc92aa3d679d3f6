"""Host-side resize and rotation used by the data pipeline."""
import jax
import numpy as np
import pytest

from canon_jax.data import resize_image, rotate_image


def _smooth_image(h, w, c, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(0.0, 1.0, (h, w, c)).astype(np.float32)


@pytest.mark.parametrize("shape_in,shape_out", [((8, 8), (20, 20)),
                                                ((96, 96), (32, 32)),
                                                ((28, 28), (32, 17))])
def test_resize_matches_jax_image_resize(shape_in, shape_out):
  x = _smooth_image(*shape_in, 3)
  want = jax.image.resize(x, (*shape_out, 3), method="linear")
  got = resize_image(x, *shape_out)
  assert got.dtype == np.float32 and got.shape == (*shape_out, 3)
  np.testing.assert_allclose(got, np.asarray(want), atol=1e-5)


def test_rotate_multiples_of_90_are_rot90():
  x = _smooth_image(9, 9, 2)
  for k in range(4):
    np.testing.assert_allclose(rotate_image(x, k * np.pi / 2), np.rot90(x, k),
                               atol=1e-5, err_msg=f"k={k}")


def test_rotate_is_counter_clockwise_about_centre():
  x = np.zeros((11, 11, 1), np.float32)
  x[5, 9] = 1.0  # right of the centre (5, 5)
  y = rotate_image(x, np.pi / 4)
  # 45 degrees counter-clockwise moves it up and left: to about (5 - 2.83, 5 + 2.83).
  rows, cols = np.mgrid[0:11, 0:11]
  w = y[..., 0] / y.sum()
  centroid = np.array([(w * rows).sum(), (w * cols).sum()])
  np.testing.assert_allclose(centroid, [5 - 2 * 2**0.5, 5 + 2 * 2**0.5], atol=0.1)
  assert y[5, 5, 0] == 0.0


def test_rotate_outside_is_zero_and_rejects_batches():
  x = np.ones((8, 8, 1), np.float32)
  y = rotate_image(x, np.pi / 4)
  assert y[0, 0, 0] == 0.0 and y[4, 4, 0] == pytest.approx(1.0)
  with pytest.raises(ValueError, match=r"image must have rank 3.*\(2, 8, 8, 1\)"):
    rotate_image(np.ones((2, 8, 8, 1)), 0.3)
