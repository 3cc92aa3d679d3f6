"""canon_jax.nn.conv: dense convolutions whose gradients XLA:CPU computes fast.

``conv2d`` must be ``lax.conv_general_dilated`` in value and in both gradients (its
kernel gradient is computed by matmuls instead of XLA's filter-gradient convolution).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from canon_jax.nn import conv as cconv

DN = ("NHWC", "HWIO", "NHWC")


@pytest.fixture(autouse=True)
def _custom_gradients_at_test_sizes(monkeypatch):
  """The matmul gradients run from 5e7 multiply-adds on; test them on tiny inputs."""
  monkeypatch.setattr(cconv, "_MIN_CUSTOM_MACS", 0)


def _reference(x, kernel, strides, padding):
  return jax.lax.conv_general_dilated(x, kernel, (strides, strides), padding,
                                      dimension_numbers=DN)


@pytest.mark.parametrize("size,cin,cout,k,strides,padding", [
    (9, 3, 4, 7, 2, ((3, 3), (3, 3))),     # ResNet's stem; 9 + 6 - 7 not divisible by 2
    (8, 5, 6, 3, 1, ((1, 1), (1, 1))),     # stride-1 3x3
    (9, 5, 6, 3, 2, ((1, 1), (1, 1))),     # strided 3x3, odd input
    (8, 4, 3, 3, 1, ((0, 0), (0, 0))),     # VALID
    (7, 2, 3, 5, 1, ((2, 1), (0, 2))),     # asymmetric padding
    (8, 3, 5, 4, 4, ((0, 0), (0, 0))),     # patchify (ViT-like)
    (11, 2, 3, 5, 3, ((2, 0), (1, 2))),    # stride 3, asymmetric padding
    (6, 4, 4, 1, 1, ((0, 0), (0, 0))),     # 1x1
])
@pytest.mark.parametrize("max_patch_rows,max_col2im_pixels", [(0, 0), (10**6, 10**6)],
                         ids=["taps_and_xla_input_grad", "patches_and_col2im"])
def test_conv2d_value_and_both_gradients_match_lax(size, cin, cout, k, strides, padding,
                                                   max_patch_rows, max_col2im_pixels,
                                                   monkeypatch):
  monkeypatch.setattr(cconv, "_MAX_PATCH_ROWS", max_patch_rows)
  monkeypatch.setattr(cconv, "_MAX_COL2IM_PIXELS", max_col2im_pixels)
  kx, kk, kc = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(kx, (2, size, size + 1, cin))
  kernel = jax.random.normal(kk, (k, k, cin, cout)) / k
  y_ref = _reference(x, kernel, strides, padding)
  y = cconv.conv2d(x, kernel, strides, padding)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  ct = jax.random.normal(kc, y_ref.shape)

  def loss(f):
    return lambda x, w: jnp.sum(jnp.sin(f(x, w)) * ct)

  got = jax.jit(jax.grad(loss(lambda x, w: cconv.conv2d(x, w, strides, padding)),
                         argnums=(0, 1)))(x, kernel)
  want = jax.grad(loss(lambda x, w: _reference(x, w, strides, padding)),
                  argnums=(0, 1))(x, kernel)
  for g, w in zip(got, want):
    assert g.shape == w.shape
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(jnp.abs(w).max()))


def test_conv2d_same_padding_string_and_vmap():
  x = jax.random.normal(jax.random.key(2), (3, 2, 6, 6, 2))
  kernel = jax.random.normal(jax.random.key(3), (3, 3, 2, 3))
  got = jax.vmap(lambda x: cconv.conv2d(x, kernel, 1, "SAME"))(x)
  want = jax.vmap(lambda x: _reference(x, kernel, 1, "SAME"))(x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  grad = jax.grad(lambda w: jnp.sum(jax.vmap(lambda x: cconv.conv2d(x, w, 1, "SAME"))(x) ** 2))
  grad_ref = jax.grad(lambda w: jnp.sum(jax.vmap(lambda x: _reference(x, w, 1, "SAME"))(x) ** 2))
  np.testing.assert_allclose(grad(kernel), grad_ref(kernel), rtol=1e-4, atol=1e-3)


def test_conv2d_bfloat16_kernel_gradient_keeps_the_kernel_dtype():
  x = jax.random.normal(jax.random.key(4), (2, 6, 6, 3), jnp.bfloat16)
  kernel = jax.random.normal(jax.random.key(5), (3, 3, 3, 4), jnp.bfloat16)
  g = jax.grad(lambda w: jnp.sum(cconv.conv2d(x, w, 1, "SAME").astype(jnp.float32)))(kernel)
  ref = jax.grad(lambda w: jnp.sum(_reference(x, w, 1, "SAME").astype(jnp.float32)))(kernel)
  assert g.dtype == jnp.bfloat16
  np.testing.assert_allclose(g.astype(np.float32), ref.astype(np.float32), rtol=5e-2, atol=0.3)


def test_conv2d_rejects_bad_input():
  x = jnp.zeros((1, 5, 5, 2))
  with pytest.raises(ValueError, match="NHWC"):
    cconv.conv2d(x[0], jnp.zeros((3, 3, 2, 2)), 1, "SAME")
  with pytest.raises(ValueError, match="channels"):
    cconv.conv2d(x, jnp.zeros((3, 3, 3, 2)), 1, "SAME")
  with pytest.raises(ValueError, match="padding"):
    cconv.conv2d(x, jnp.zeros((3, 3, 2, 2)), 1, "FULL")


def test_small_convolutions_are_plain_lax_convolutions(monkeypatch):
  monkeypatch.setattr(cconv, "_MIN_CUSTOM_MACS", 10**9)
  x, kernel = jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 2))
  jaxpr = str(jax.make_jaxpr(lambda x, w: cconv.conv2d(x, w, 1, "SAME"))(x, kernel))
  assert "custom_vjp" not in jaxpr and "conv_general_dilated" in jaxpr
  monkeypatch.setattr(cconv, "_MIN_CUSTOM_MACS", 0)
  jaxpr = str(jax.make_jaxpr(lambda x, w: cconv.conv2d(x, w, 1, "SAME"))(x, kernel))
  assert "custom_vjp" in jaxpr


def test_pointwise_is_a_1x1_convolution():
  x = jax.random.normal(jax.random.key(6), (2, 4, 5, 3))
  m = jax.random.normal(jax.random.key(7), (3, 6))
  np.testing.assert_allclose(cconv.pointwise(x, m), _reference(x, m[None, None], 1, "VALID"),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window,strides,padding", [
    (3, 2, ((1, 1), (1, 1))),   # ResNet's stem pooling
    (2, 2, "VALID"),
    (3, 1, "SAME"),
    ((2, 3), (1, 2), ((0, 1), (1, 0))),
])
def test_max_pool2d_matches_flax_in_value_and_gradient(window, strides, padding):
  import flax.linen as nn
  x = jax.random.normal(jax.random.key(8), (2, 7, 8, 3))   # no ties
  w = (window, window) if isinstance(window, int) else window
  s = (strides, strides) if isinstance(strides, int) else strides
  want_fn = lambda x: nn.max_pool(x, w, strides=s, padding=padding)
  got_fn = lambda x: cconv.max_pool2d(x, window, strides, padding)
  np.testing.assert_array_equal(got_fn(x), want_fn(x))
  ct = jax.random.normal(jax.random.key(9), want_fn(x).shape)
  # Overlapping windows add their cotangents in another order: equal to rounding.
  np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(got_fn(x) * ct))(x),
                             jax.grad(lambda x: jnp.sum(want_fn(x) * ct))(x),
                             rtol=1e-6, atol=1e-6)


def test_max_pool2d_routes_the_gradient_of_ties_to_the_first_maximum():
  x = jnp.zeros((1, 2, 2, 1)).at[0, 0, :, 0].set(1.0)   # two maxima in one window
  g = jax.grad(lambda x: jnp.sum(cconv.max_pool2d(x, 2, 2)))(x)
  np.testing.assert_array_equal(g[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])


def test_max_pool2d_matches_torch_with_ties_in_value_and_gradient():
  torch = pytest.importorskip("torch")
  # Integer pixels: many windows hold several maxima, and after a ReLU many are 0.
  x = np.maximum(np.random.default_rng(3).integers(-2, 3, (2, 9, 11, 4)), 0).astype(
      np.float32)
  ct = np.random.default_rng(4).standard_normal((2, 5, 6, 4)).astype(np.float32)
  xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
  yt = torch.nn.functional.max_pool2d(xt, 3, 2, padding=1)
  (yt * torch.tensor(ct.transpose(0, 3, 1, 2))).sum().backward()
  fn = lambda x: cconv.max_pool2d(x, 3, 2, ((1, 1), (1, 1)))
  y, vjp = jax.vjp(fn, jnp.asarray(x))
  np.testing.assert_array_equal(y, yt.detach().numpy().transpose(0, 2, 3, 1))
  np.testing.assert_allclose(vjp(jnp.asarray(ct))[0],
                             xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)


@jax.debug_nans(False)
def test_max_pool2d_propagates_nan():
  x = jnp.ones((1, 4, 4, 1)).at[0, 1, 2, 0].set(jnp.nan)
  y = cconv.max_pool2d(x, 2, 2)
  np.testing.assert_array_equal(np.isnan(y[0, :, :, 0]), [[False, True], [False, False]])


@pytest.mark.parametrize("shape", [(7,), (4, 7), (2, 3, 7), (2, 3, 4, 7)])
def test_dense_is_flax_dense_with_its_parameters_names_values_and_gradients(shape):
  import flax.linen as nn

  def stack(dense_cls):
    class Two(nn.Module):      # two auto-named layers, as in the models
      @nn.compact
      def __call__(self, x):
        return dense_cls(5, use_bias=False)(jnp.tanh(dense_cls(6)(x)))
    return Two()

  x = jax.random.normal(jax.random.key(0), shape)
  ours, ref = stack(cconv.Dense), stack(nn.Dense)
  variables = ours.init(jax.random.key(1), x)
  ref_variables = ref.init(jax.random.key(1), x)
  assert jax.tree.structure(variables) == jax.tree.structure(ref_variables)
  assert sorted(variables["params"]) == ["Dense_0", "Dense_1"]
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(ref_variables)):
    np.testing.assert_array_equal(a, b)               # same initialisers and keys

  def loss(module, v, x):
    return jnp.sum(jnp.sin(module.apply(v, x)))

  out = ours.apply(variables, x)
  assert out.shape == (*shape[:-1], 5)
  np.testing.assert_allclose(out, ref.apply(variables, x), rtol=1e-6, atol=1e-6)
  grads = jax.grad(lambda v, x: loss(ours, v, x), argnums=(0, 1))(variables, x)
  ref_grads = jax.grad(lambda v, x: loss(ref, v, x), argnums=(0, 1))(variables, x)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# -- the matmul gradients are XLA:CPU tunings: other backends get XLA's own --------


def _conv_jaxpr(x, kernel, padding="SAME"):
  # A new function each time: JAX caches traces by function, and the path is chosen
  # when tracing.
  return str(jax.make_jaxpr(lambda x, w: cconv.conv2d(x, w, 1, padding))(x, kernel))


def test_matmul_gradients_follow_the_default_backend(monkeypatch):
  x, kernel = jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 2))
  assert cconv.matmul_gradients()              # the CPU, AVX-512 hidden by conftest.py
  assert "custom_vjp" in _conv_jaxpr(x, kernel)
  # With AVX-512 XLA:CPU's own gradients (YNNPACK convolutions) are the faster ones.
  monkeypatch.setattr(cconv, "_host_has_avx512", lambda: True)
  assert not cconv.matmul_gradients()
  jaxpr = _conv_jaxpr(x, kernel)
  assert "custom_vjp" not in jaxpr and "conv_general_dilated" in jaxpr
  monkeypatch.setattr(cconv, "_host_has_avx512", lambda: False)  # the backend alone
  for backend in ("gpu", "tpu"):
    monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
    assert not cconv.matmul_gradients()
    jaxpr = _conv_jaxpr(x, kernel)
    assert "custom_vjp" not in jaxpr and "conv_general_dilated" in jaxpr
    # 1 x 1 convolutions stay one matmul everywhere (the same op, not a tuning).
    assert "conv_general_dilated" not in _conv_jaxpr(x, kernel[:1, :1], "VALID")


def test_cpu_flags_reads_the_first_flags_line(tmp_path):
  info = tmp_path / "cpuinfo"
  info.write_text("processor\t: 0\nmodel name\t: Some CPU\n"
                  "flags\t\t: fpu sse2 avx2 avx512f avx512bw\n\n"
                  "processor\t: 1\nflags\t\t: fpu\n")
  flags = cconv.cpu_flags(str(info))
  assert "avx512f" in flags and "avx2" in flags and "avx512" not in flags
  info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
  assert "avx512f" not in cconv.cpu_flags(str(info))
  info.write_text("processor\t: 0\n")           # no flags line (e.g. some ARM kernels)
  assert cconv.cpu_flags(str(info)) == frozenset()
  assert cconv.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_set_matmul_gradients_overrides_and_restores(monkeypatch):
  x, kernel = jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 2))
  previous = cconv.set_matmul_gradients(False)
  try:
    assert previous is None and not cconv.matmul_gradients()
    assert "custom_vjp" not in _conv_jaxpr(x, kernel)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert cconv.set_matmul_gradients(True) is False
    assert cconv.matmul_gradients() and "custom_vjp" in _conv_jaxpr(x, kernel)
  finally:
    cconv.set_matmul_gradients(None)
  assert not cconv.matmul_gradients()           # back to the (patched) backend's default
  with pytest.raises(TypeError, match="True, False or None"):
    cconv.set_matmul_gradients("xla")


def test_both_gradient_paths_give_the_same_numbers():
  kx, kk = jax.random.split(jax.random.key(10))
  x = jax.random.normal(kx, (2, 9, 9, 3))
  kernel = jax.random.normal(kk, (3, 3, 3, 4)) / 3
  grads = {}
  for enabled in (True, False):
    cconv.set_matmul_gradients(enabled)
    try:
      loss = lambda x, w: jnp.sum(jnp.sin(cconv.conv2d(x, w, 2, ((1, 1), (1, 1)))))
      grads[enabled] = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel)
    finally:
      cconv.set_matmul_gradients(None)
  for a, b in zip(grads[True], grads[False]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
