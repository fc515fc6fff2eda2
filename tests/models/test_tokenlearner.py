"""TokenLearner v1.0, v1.1 and TokenFuser against the reference math."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from tests import numpy_reference as ref
from tests.testing import as_numpy
from tests.testing import param_shapes
from tests.testing import perturbed
from tokenlearner_jax.models import TokenFuser
from tokenlearner_jax.models import TokenLearnerModule
from tokenlearner_jax.models import TokenLearnerModuleV11


class TokenLearnerV10Test(parameterized.TestCase):

  @parameterized.named_parameters(('3d', (2, 16, 12)), ('4d', (2, 4, 4, 12)),
                                  ('4d_non_square', (2, 3, 5, 12)))
  def test_shape(self, shape):
    x = jnp.ones(shape)
    module = TokenLearnerModule(num_tokens=5)
    out = module.apply(module.init(jax.random.PRNGKey(0), x), x)
    self.assertEqual(out.shape, (2, 5, 12))

  def test_parameter_names_and_count(self):
    module = TokenLearnerModule(num_tokens=8)
    params = module.init(jax.random.PRNGKey(0), jnp.ones((1, 16, 32)))['params']
    self.assertEqual(param_shapes(params), {
        'LayerNorm_0/scale': (32,), 'LayerNorm_0/bias': (32,),
        'Conv_0/kernel': (3, 3, 32, 8), 'Conv_1/kernel': (3, 3, 8, 8),
        'Conv_2/kernel': (3, 3, 8, 8), 'Conv_3/kernel': (3, 3, 8, 8)})
    count = sum(x.size for x in jax.tree_util.tree_leaves(params))
    self.assertEqual(count, 2 * 32 + 9 * 32 * 8 + 3 * 9 * 8 * 8)

  @parameterized.parameters(True, False)
  def test_matches_numpy(self, use_sum_pooling):
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 25, 16))
    module = TokenLearnerModule(num_tokens=4, use_sum_pooling=use_sum_pooling)
    params = perturbed(module.init(jax.random.PRNGKey(0), x)['params'])
    out = module.apply({'params': params}, x)
    expected = ref.tokenlearner_v10(np.asarray(x, np.float64),
                                    as_numpy(params), use_sum_pooling)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)

  def test_weights_are_sigmoids_and_sown(self):
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 8))
    module = TokenLearnerModule(num_tokens=3)
    variables = module.init(jax.random.PRNGKey(0), x)
    _, state = module.apply({'params': variables['params']}, x,
                            mutable=['intermediates'])
    (weights,) = state['intermediates']['attention_maps']
    self.assertEqual(weights.shape, (2, 3, 16))
    self.assertTrue(np.all((weights > 0) & (weights < 1)))

  def test_non_square_3d_input_raises(self):
    module = TokenLearnerModule(num_tokens=4)
    with self.assertRaisesRegex(ValueError, r'square grid.*\(2, 12, 8\)'):
      module.init(jax.random.PRNGKey(0), jnp.ones((2, 12, 8)))

  def test_jit_equals_no_jit(self):
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 8))
    module = TokenLearnerModule(num_tokens=4)
    variables = module.init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(jax.jit(module.apply)(variables, x),
                               module.apply(variables, x), atol=1e-6)


class TokenLearnerV11Test(parameterized.TestCase):

  @parameterized.named_parameters(('3d', (2, 15, 12)), ('4d', (2, 3, 5, 12)))
  def test_shape_any_grid(self, shape):
    x = jnp.ones(shape)
    module = TokenLearnerModuleV11(num_tokens=6)
    out = module.apply(module.init(jax.random.PRNGKey(0), x, True), x, True)
    self.assertEqual(out.shape, (2, 6, 12))

  def test_parameter_names_and_count(self):
    module = TokenLearnerModuleV11(num_tokens=8)
    params = module.init(jax.random.PRNGKey(0), jnp.ones((1, 10, 32)),
                         True)['params']
    self.assertEqual(param_shapes(params), {
        'LayerNorm_0/scale': (32,), 'LayerNorm_0/bias': (32,),
        'token_masking/Dense_0/kernel': (32, 64),
        'token_masking/Dense_0/bias': (64,),
        'token_masking/Dense_1/kernel': (64, 8),
        'token_masking/Dense_1/bias': (8,)})

  def test_matches_numpy_and_weights_sum_to_one(self):
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 4, 5, 16))
    module = TokenLearnerModuleV11(num_tokens=7, bottleneck_dim=9)
    params = perturbed(module.init(jax.random.PRNGKey(0), x, True)['params'])
    out, state = module.apply({'params': params}, x, True,
                              mutable=['intermediates'])
    x3 = np.asarray(x, np.float64).reshape(3, 20, 16)
    np.testing.assert_allclose(out, ref.tokenlearner_v11(x3, as_numpy(params)),
                               atol=1e-5, rtol=1e-5)
    (weights,) = state['intermediates']['attention_maps']
    self.assertEqual(weights.shape, (3, 7, 20))
    np.testing.assert_allclose(weights.sum(-1), np.ones((3, 7)), atol=1e-6)

  def test_dropout_only_in_training(self):
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 8))
    module = TokenLearnerModuleV11(num_tokens=4, dropout_rate=0.5)
    variables = module.init(jax.random.PRNGKey(0), x, True)
    eval_a = module.apply(variables, x, True)
    eval_b = module.apply(variables, x, True)
    train = module.apply(variables, x, False,
                         rngs={'dropout': jax.random.PRNGKey(3)})
    np.testing.assert_array_equal(eval_a, eval_b)
    self.assertGreater(float(jnp.abs(train - eval_a).max()), 1e-3)

  def test_jit_equals_no_jit(self):
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 8))
    module = TokenLearnerModuleV11(num_tokens=4)
    variables = module.init(jax.random.PRNGKey(0), x, True)
    apply = lambda v, x: module.apply(v, x, True)
    np.testing.assert_allclose(jax.jit(apply)(variables, x),
                               apply(variables, x), atol=1e-6)


class TokenFuserTest(parameterized.TestCase):

  @parameterized.named_parameters(('3d', (2, 12, 16)), ('4d', (2, 3, 4, 16)))
  def test_output_has_original_shape(self, original_shape):
    tokens, original = jnp.ones((2, 5, 16)), jnp.ones(original_shape)
    module = TokenFuser()
    variables = module.init(jax.random.PRNGKey(0), tokens, original, True)
    out = module.apply(variables, tokens, original, True)
    self.assertEqual(out.shape, original_shape)

  def test_parameter_names(self):
    module = TokenFuser()
    params = module.init(jax.random.PRNGKey(0), jnp.ones((1, 4, 16)),
                         jnp.ones((1, 9, 16)), True)['params']
    self.assertEqual(param_shapes(params), {
        'fuser_mix_norm1/scale': (16,), 'fuser_mix_norm1/bias': (16,),
        'Dense_0/kernel': (4, 4), 'Dense_0/bias': (4,),
        'fuser_mix_norm2/scale': (16,), 'fuser_mix_norm2/bias': (16,),
        'LayerNorm_0/scale': (16,), 'LayerNorm_0/bias': (16,),
        'token_masking/Dense_0/kernel': (16, 64),
        'token_masking/Dense_0/bias': (64,),
        'token_masking/Dense_1/kernel': (64, 4),
        'token_masking/Dense_1/bias': (4,)})

  @parameterized.parameters(True, False)
  def test_matches_numpy(self, use_normalization):
    tokens = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 16))
    original = jax.random.normal(jax.random.PRNGKey(2), (3, 4, 6, 16))
    module = TokenFuser(use_normalization=use_normalization, bottleneck_dim=8)
    params = perturbed(
        module.init(jax.random.PRNGKey(0), tokens, original, True)['params'])
    out = module.apply({'params': params}, tokens, original, True)
    expected = ref.tokenfuser(
        np.asarray(tokens, np.float64),
        np.asarray(original, np.float64).reshape(3, 24, 16),
        as_numpy(params), use_normalization)
    np.testing.assert_allclose(out, expected.reshape(3, 4, 6, 16), atol=1e-5,
                               rtol=1e-5)

  def test_exactly_zero_at_init_with_large_mixing_gradient(self):
    # Reference behaviour kept on purpose (scenic-notes §2.1 item 7): the zero
    # `Dense_0` kernel feeds a zero-variance input to `fuser_mix_norm2`, so the
    # output is 0 and that kernel's gradient is amplified 1/sqrt(1e-6) = 1000x.
    tokens = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 16))
    original = jax.random.normal(jax.random.PRNGKey(2), (2, 9, 16))
    variables = TokenFuser().init(jax.random.PRNGKey(0), tokens, original, True)
    out = TokenFuser().apply(variables, tokens, original, True)
    np.testing.assert_array_equal(out, np.zeros_like(out))

    def loss(params, use_normalization):
      return jnp.sum(TokenFuser(use_normalization=use_normalization).apply(
          {'params': params}, tokens, original, True) * original)

    params = variables['params']
    normed = jax.grad(loss)(params, True)['Dense_0']['kernel']
    plain_params = {k: v for k, v in params.items()
                    if 'fuser_mix_norm' not in k}
    plain = jax.grad(loss)(plain_params, False)['Dense_0']['kernel']
    ratio = float(jnp.linalg.norm(normed) / jnp.linalg.norm(plain))
    self.assertGreater(ratio, 100.0)


if __name__ == '__main__':
  absltest.main()
