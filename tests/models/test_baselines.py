"""The paper's baselines: pooling and dense tokens instead of TokenLearner,
'unpool' and 'reprojection' instead of TokenFuser, and v1.0's mean pooling
(the paper's text) instead of the reference's sum."""

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tests.testing import model_only_config
from tests.testing import perturbed
from tokenlearner_jax.models import build_model
from tokenlearner_jax.models.tokenlearner import DenseTokens
from tokenlearner_jax.models.tokenlearner import PoolingTokens
from tokenlearner_jax.models.tokenlearner import TokenLearnerModule
from tokenlearner_jax.models.tokenlearner import TokenLearnerModuleV11
from tokenlearner_jax.models.tokenlearner import TokenReprojection
from tokenlearner_jax.models.tokenlearner import unpool_tokens

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

  def test_unpool_scatters_with_the_learners_own_weights(self):
    module = TokenLearnerModuleV11(3)
    params = perturbed(module.init(jax.random.PRNGKey(1), X, True)['params'])
    (tokens, weights), state = module.apply(
        {'params': params}, X, True, return_weights=True,
        mutable=['intermediates'])
    np.testing.assert_array_equal(
        weights, state['intermediates']['attention_maps'][0])
    np.testing.assert_array_equal(tokens, module.apply({'params': params}, X,
                                                       True))
    out = unpool_tokens(tokens, weights)  # [B, HW, C]
    expected = np.einsum('bsi,bsc->bic', np.asarray(weights),
                         np.asarray(tokens))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)

  def test_reprojection_is_attention_from_the_grid_to_the_tokens(self):
    module = TokenReprojection(num_heads=1)
    tokens = jax.random.normal(jax.random.PRNGKey(3), (2, 3, 5))  # [B, S, C]
    params = perturbed(nn.unbox(module.init(jax.random.PRNGKey(1), tokens, X,
                                            True))['params'])
    out = module.apply({'params': params}, tokens, X, True)
    self.assertEqual(out.shape, X.shape)

    def norm(x, name):
      return (layer_norm(np.asarray(x)) * np.asarray(params[name]['scale']) +
              np.asarray(params[name]['bias']))

    attention = params['MultiHeadDotProductAttention_0']

    def project(x, name):  # Kernels [C, heads=1, C].
      return (np.einsum('blc,chd->blhd', x, attention[name]['kernel']) +
              attention[name]['bias'])[:, :, 0]

    q = project(norm(X, 'LayerNorm_0'), 'query')  # [B, HW, C]
    k = project(norm(tokens, 'LayerNorm_1'), 'key')  # [B, S, C]
    v = project(norm(tokens, 'LayerNorm_1'), 'value')  # [B, S, C]
    logits = np.einsum('bic,bsc->bis', q, k) / np.sqrt(5)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    mixed = np.einsum('bis,bsc->bic', probs, v)[:, :, None]  # [B, HW, 1, C]
    expected = (np.einsum('bihd,hdc->bic', mixed, attention['out']['kernel']) +
                attention['out']['bias'])
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def image_config(**kwargs):
  return model_only_config('dynamic', **kwargs)


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
       64),
      (dict(token_reduction='pooling', use_tokenfuse=True, scan_layers=True),
       'PoolingTokens', 64),
      # Table 5's "2x2 pool at 9 and 18", here at 1 and 2: 64 -> 16 -> 4.
      (dict(token_reduction='pooling', pooling_locs=(2,)), 'PoolingTokens_1',
       4),
      (dict(use_tokenfuse=True, fuser_type='unpool'),
       'TokenLearnerModuleV11_1', 64),
      (dict(use_tokenfuse=True, fuser_type='reprojection'),
       'TokenReprojection_1', 64))
  def test_tokens_per_layer(self, kwargs, module, tokens_after):
    config = image_config(tokenlearner_loc=1, **kwargs)
    model = build_model(config, 7)
    x = jnp.zeros((2, 32, 32, 3))  # An 8x8 grid of 64 tokens.
    # Shapes and names only: traced, not run.
    logits, inter = jax.eval_shape(lambda: model.apply(
        nn.unbox(model.init(jax.random.PRNGKey(0), x, train=False)), x,
        train=False, capture_intermediates=True))
    self.assertEqual(logits.shape, (2, 7))
    encoder = inter['intermediates']['Transformer']
    # Modules of the encoder, and of its scanned TokenLearner -> block -> fuser
    # units.
    names = set(encoder) | {name for key, unit in encoder.items()
                            if key.startswith('fuserlayer') for name in unit}
    self.assertIn(module, names)
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
    for kwargs, field in [
        (dict(use_tokenfuse=True, fuser_type='fuse'), 'fuser_type'),
        (dict(fuser_type='unpool'), 'use_tokenfuse=True'),
        (dict(use_tokenfuse=True, fuser_type='unpool',
              token_reduction='pooling'), "token_reduction='tokenlearner'"),
        (dict(pooling_locs=(2,)), r"pooling_locs=\(2,\) is read by "
         "token_reduction='pooling' or 'evit' or 'ats' only"),
        (dict(token_reduction='pooling', pooling_locs=(1,)),
         r'pooling_locs must be increasing .* got \(1,\)'),
        (dict(token_reduction='pooling', pooling_locs=(2,),
              scan_layers=True), 'scan_layers'),
    ]:
      with self.assertRaisesRegex(ValueError, field):
        build_model(image_config(tokenlearner_loc=1, **kwargs), 7)


if __name__ == '__main__':
  absltest.main()
