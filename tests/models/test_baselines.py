"""The paper's baselines: pooling and dense tokens instead of TokenLearner,
and v1.0's mean pooling (the paper's text) instead of the reference's sum."""

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tests.models.test_tokenlearner import perturbed
from tokenlearner_jax import config_lib
from tokenlearner_jax.models import build_model
from tokenlearner_jax.models.tokenlearner import DenseTokens
from tokenlearner_jax.models.tokenlearner import PoolingTokens
from tokenlearner_jax.models.tokenlearner import TokenLearnerModule

X = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 5))  # [B, HW=4x4, C]


def layer_norm(x):
  mean = x.mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)


class BaselineModulesTest(absltest.TestCase):

  def test_pooling_averages_k_by_k_blocks(self):
    out = PoolingTokens(2).apply({}, X)
    grid = np.asarray(X).reshape(2, 2, 2, 2, 2, 5)  # [B, h, k, w, k, C]
    np.testing.assert_allclose(out, grid.mean((2, 4)).reshape(2, 4, 5),
                               rtol=1e-6)
    with self.assertRaisesRegex(ValueError, 'pooling_window=3'):
      PoolingTokens(3).apply({}, X)

  def test_dense_tokens_weight_space_independently_of_the_input(self):
    module = DenseTokens(3)
    params = perturbed(module.init(jax.random.PRNGKey(1), X)['params'])
    out = module.apply({'params': params}, X)
    kernel = np.asarray(params['Dense_0']['kernel'])  # [HW, S]
    bias = np.asarray(params['Dense_0']['bias'])  # [S]
    ln = layer_norm(np.asarray(X)) * np.asarray(
        params['LayerNorm_0']['scale']) + np.asarray(
            params['LayerNorm_0']['bias'])
    expected = np.einsum('bic,is->bsc', ln, kernel) + bias[None, :, None]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)

  def test_v10_mean_pooling_is_the_sum_over_hw(self):
    summed = TokenLearnerModule(4)
    params = summed.init(jax.random.PRNGKey(1), X)
    mean = TokenLearnerModule(4, use_sum_pooling=False)
    np.testing.assert_allclose(mean.apply(params, X),
                               summed.apply(params, X) / 16, rtol=1e-5)


def image_config(**kwargs):
  config = ml_collections.ConfigDict()
  config.model = config_lib.model_config('mu/4', 'dynamic', **kwargs)
  config.model.num_layers = 3
  return config


class BaselineModelsTest(parameterized.TestCase):

  @parameterized.parameters(
      (dict(token_reduction='pooling', pooling_window=2), 'PoolingTokens_0',
       16),
      (dict(token_reduction='pooling', pooling_window=4), 'PoolingTokens_0',
       4),
      (dict(token_reduction='dense', num_tokens=5), 'DenseTokens_0', 5),
      (dict(token_reduction='dense', num_tokens=5, scan_layers=True),
       'DenseTokens_0', 5),
      (dict(token_reduction='pooling', use_tokenfuse=True), 'PoolingTokens_1',
       64))
  def test_tokens_per_layer(self, kwargs, module, tokens_after):
    config = image_config(tokenlearner_loc=1, **kwargs)
    model = build_model(config, 7)
    x = jnp.zeros((2, 32, 32, 3))  # An 8x8 grid of 64 tokens.
    variables = nn.unbox(model.init(jax.random.PRNGKey(0), x, train=False))
    logits, inter = model.apply(variables, x, train=False,
                                capture_intermediates=True)
    self.assertEqual(logits.shape, (2, 7))
    encoder = inter['intermediates']['Transformer']
    self.assertIn(module, encoder)
    # The encoder's output: the tokens the last block saw.
    self.assertEqual(encoder['__call__'][0].shape, (2, tokens_after, 32))

  def test_bad_baseline_fields_are_named(self):
    config = image_config(tokenlearner_loc=1, token_reduction='avg')
    with self.assertRaisesRegex(ValueError, 'token_reduction'):
      build_model(config, 7)
    config = image_config(tokenlearner_loc=1, token_reduction='pooling',
                          pooling_window=0)
    with self.assertRaisesRegex(ValueError, 'pooling_window'):
      build_model(config, 7)
    config = image_config(tokenlearner_loc=1, token_reduction='dense',
                          use_tokenfuse=True, scan_layers=True)
    with self.assertRaisesRegex(ValueError, 'scan_layers'):
      build_model(config, 7)


if __name__ == '__main__':
  absltest.main()
