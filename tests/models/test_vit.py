"""Tests of the ViT / ViViT classifiers: shapes, parameter counts, parity with
the NumPy reference forward pass and sown attention maps."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from tests import numpy_reference as ref
from tests.testing import as_numpy
from tests.testing import model_only_config
from tests.testing import perturbed
from tokenlearner_jax.models import build_model
from tokenlearner_jax.checkpoint_formats import from_scenic_params

NUM_CLASSES = 7


def make_config(tokenizer_type='dynamic', **kwargs):
  """A 3-block 'mu' config without dropout; kwargs go to `model_config`."""
  return model_only_config(tokenizer_type, **kwargs)


def factorised_config(classifier):
  config = make_config('video', classifier=classifier)
  config.model.attention_config = dict(type='factorized_encoder')
  config.model.spatial_transformer = dict(num_layers=2, num_heads=2, mlp_dim=64)
  config.model.temporal_transformer = dict(num_layers=1, num_heads=2,
                                           mlp_dim=48)
  return config


def init_and_apply(config, x, seed=0):
  model = build_model(config, NUM_CLASSES)
  params = jax.jit(lambda x: model.init(jax.random.PRNGKey(seed), x,
                                        train=False))(x)['params']
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False,
                                           mutable=['intermediates']))
  return model, params, apply


def count(params):
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


def param_count(config, shape) -> int:
  """Parameters of `config`'s model for inputs of `shape` (none computed)."""
  model = build_model(config, NUM_CLASSES)
  return count(jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.ones(shape), train=False))['params'])


# Parameter counts of the 'mu' pieces (width 32, MLP 64, 2 heads), by hand.
BLOCK = 2 * 64 + 4 * (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32)
V11 = lambda s: 64 + (32 * 64 + 64) + (64 * s + s)
V10 = lambda s: 64 + 9 * 32 * s + 3 * 9 * s * s
FUSER = lambda s: 3 * 64 + (s * s + s) + (32 * 64 + 64) + (64 * s + s)
HEAD = 32 * NUM_CLASSES + NUM_CLASSES


class BuildModelTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('vit', 'patch', {}, 0),
      ('v11', 'dynamic', dict(tokenlearner_loc=1, num_tokens=5), V11(5)),
      ('v10', 'dynamic', dict(tokenlearner_loc=1, num_tokens=5,
                              use_v11=False), V10(5)),
      ('v11_fuser', 'dynamic', dict(tokenlearner_loc=1, num_tokens=5,
                                    use_tokenfuse=True),
       2 * (V11(5) + FUSER(5))),
      ('v10_fuser', 'dynamic', dict(tokenlearner_loc=0, num_tokens=3,
                                    use_v11=False, use_tokenfuse=True),
       3 * (V10(3) + FUSER(3))),
  )
  def test_image_parameter_count(self, tokenizer_type, kwargs, learner_params):
    config = make_config(tokenizer_type, **kwargs)
    embedding = 4 * 4 * 3 * 32 + 32
    posemb = 16 * 32
    self.assertEqual(param_count(config, (1, 16, 16, 3)), embedding + posemb + 3 * BLOCK + 64 +
                     learner_params + HEAD)

  def test_video_token_head_representation_parameter_count(self):
    config = make_config('video', tokenlearner_loc=2, num_tokens=4,
                         classifier='token', representation_size=16)
    embedding = 2 * 4 * 4 * 3 * 32 + 32
    posemb = (2 * 16 + 1) * 32  # 2 slices of 4x4 tokens and the class token
    head = 32 * 16 + 16 + 16 * NUM_CLASSES + NUM_CLASSES
    self.assertEqual(param_count(config, (1, 4, 16, 16, 3)),
                     embedding + 32 + posemb + 3 * BLOCK + 64 + V11(4) + head)

  def test_factorised_encoder_parameter_count(self):
    temporal_block = BLOCK - 2 * (64 * 32) + 2 * (48 * 32) + 48 - 64
    embedding = 2 * 4 * 4 * 3 * 32 + 32
    spatial = 32 + 17 * 32 + 2 * BLOCK + 64
    temporal = 32 + 3 * 32 + temporal_block + 64
    self.assertEqual(param_count(factorised_config('token'), (1, 4, 16, 16, 3)),
                     embedding + spatial + temporal + HEAD)

  @parameterized.parameters(1, 2, 4)
  def test_video_shapes_and_attention_maps(self, temporal_dims):
    config = make_config('video', tokenlearner_loc=1, num_tokens=3,
                         use_tokenfuse=True)
    x = jnp.ones((2, 2 * temporal_dims, 12, 16, 3))
    model = build_model(config, NUM_CLASSES)
    logits, state = jax.eval_shape(lambda: model.apply(  # Traced, not run.
        model.init(jax.random.PRNGKey(0), x, train=False), x, train=False,
        mutable=['intermediates']))
    self.assertEqual(logits.shape, (2, NUM_CLASSES))
    maps = state['intermediates']['Transformer']
    self.assertEqual(sorted(maps),
                     ['TokenLearnerModuleV11_0', 'TokenLearnerModuleV11_1'])
    (weights,) = maps['TokenLearnerModuleV11_0']['attention_maps']
    self.assertEqual(weights.shape, (2 * temporal_dims, 3, 12))

  @parameterized.named_parameters(('image', (2, 16, 16, 3), 'dynamic'),
                                  ('video', (2, 4, 16, 16, 3), 'video'))
  def test_jit_equals_no_jit(self, shape, tokenizer_type):
    config = make_config(tokenizer_type, tokenlearner_loc=1, num_tokens=2)
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    model, params, _ = init_and_apply(config, x)
    params = perturbed(params)
    eager = model.apply({'params': params}, x, train=False)
    jitted = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False))
    np.testing.assert_allclose(jitted(params, x), eager, atol=1e-5, rtol=1e-5)

  def test_stochastic_depth_is_wired(self):
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 16, 16, 3))
    outputs = {}
    params = None  # The same for both rates: stochastic depth has none.
    for rate in (0.0, 0.5):
      config = make_config(tokenlearner_loc=1, num_tokens=2,
                           stochastic_depth=rate)
      if params is None:
        model, params, _ = init_and_apply(config, x)
        params = perturbed(params)
      model = build_model(config, NUM_CLASSES)
      run = jax.jit(lambda p, x, train, m=model: m.apply(
          {'params': p}, x, train=train,
          rngs={'dropout': jax.random.PRNGKey(5)}),
                    static_argnums=2)
      outputs[rate] = (run(params, x, True), run(params, x, False))
    np.testing.assert_allclose(*outputs[0.0], atol=1e-6)
    self.assertGreater(float(jnp.abs(outputs[0.5][0] - outputs[0.5][1]).max()),
                       1e-3)

  def test_bfloat16_model_tracks_float32(self):
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    config = make_config(tokenlearner_loc=1, num_tokens=2)
    _, params, apply32 = init_and_apply(config, x)
    config.model_dtype_str = 'bfloat16'
    _, _, apply16 = init_and_apply(config, x)
    params = perturbed(params)
    logits16, logits32 = apply16(params, x)[0], apply32(params, x)[0]
    self.assertEqual(logits16.shape, (2, NUM_CLASSES))
    np.testing.assert_allclose(np.asarray(logits16, np.float32), logits32,
                               atol=0.1)

  def test_factorised_encoder_applies_dropout_in_training(self):
    config = factorised_config('token')
    config.model.dropout_rate = 0.3
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 16, 16, 3))
    model, params, _ = init_and_apply(config, x)
    run = jax.jit(lambda p, x, train: model.apply(
        {'params': p}, x, train=train, rngs={'dropout': jax.random.PRNGKey(5)}),
                  static_argnums=2)
    params = perturbed(params)
    self.assertGreater(float(jnp.abs(run(params, x, True) -
                                     run(params, x, False)).max()), 1e-3)


PARITY_CASES = (
    ('vit', 'patch', {}, (2, 16, 16, 3)),
    ('v11', 'dynamic', dict(tokenlearner_loc=1, num_tokens=5,
                            representation_size=16), (2, 16, 16, 3)),
    ('v10', 'dynamic', dict(tokenlearner_loc=1, num_tokens=5, use_v11=False),
     (2, 16, 16, 3)),
    ('v11_fuser_token', 'dynamic', dict(tokenlearner_loc=1, num_tokens=4,
                                        use_tokenfuse=True, classifier='token'),
     (2, 16, 16, 3)),
    ('v10_fuser_gsp', 'dynamic', dict(tokenlearner_loc=0, num_tokens=3,
                                      use_v11=False, use_tokenfuse=True,
                                      classifier='gsp', representation_size=16),
     (2, 16, 16, 3)),
    ('v11_fuser_non_square', 'dynamic', dict(tokenlearner_loc=1, num_tokens=4,
                                             use_tokenfuse=True,
                                             classifier='gmp'), (2, 16, 24, 3)),
    ('v11_border_dropped', 'dynamic', dict(tokenlearner_loc=1, num_tokens=4),
     (2, 18, 19, 3)),
    ('video_v11_fuser', 'video', dict(tokenlearner_loc=1, num_tokens=4,
                                      use_tokenfuse=True,
                                      representation_size=16),
     (2, 4, 16, 16, 3)),
    ('video_v10_token', 'video', dict(tokenlearner_loc=2, num_tokens=4,
                                      use_v11=False, classifier='token'),
     (2, 4, 16, 16, 3)),
    ('vivit_baseline', 'video', dict(classifier='token'), (2, 4, 16, 16, 3)),
)


class ReferenceParityTest(parameterized.TestCase):
  """Our logits equal the independent NumPy reference's to 1e-4."""

  def assert_parity(self, config, shape, reference_fn):
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    _, params, apply = init_and_apply(config, x)
    # The reference layout loads as is; perturb so zero inits are exercised.
    params = perturbed(from_scenic_params(params, config))
    logits, _ = apply(params, x)
    expected = reference_fn(np.asarray(x), as_numpy(params),
                            config.model.to_dict())
    self.assertGreater(np.abs(expected).max(), 0.1)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)

  @parameterized.named_parameters(*PARITY_CASES)
  def test_token_learner_vit(self, tokenizer_type, kwargs, shape):
    self.assert_parity(make_config(tokenizer_type, **kwargs), shape,
                       ref.token_learner_vit)

  def test_temporal_sampling(self):
    config = make_config('video', tokenlearner_loc=1, num_tokens=3)
    config.model.tokenizer.patches.size = (4, 4)
    config.model.tokenizer.temporal_encoding_config.method = 'temporal_sampling'
    config.model.tokenizer.temporal_encoding_config.n_sampled_frames = 3
    self.assert_parity(config, (2, 8, 16, 12, 3), ref.token_learner_vit)

  @parameterized.parameters('token', 'gap')
  def test_factorised_encoder(self, classifier):
    self.assert_parity(factorised_config(classifier), (2, 4, 16, 16, 3),
                       ref.factorised_vivit)


class TokenLearnerOffTest(absltest.TestCase):

  def test_tokenlearner_off_is_the_plain_encoder(self):
    model = build_model(make_config(tokenlearner_loc=None), NUM_CLASSES)
    params = jax.eval_shape(lambda: model.init(
        jax.random.PRNGKey(0), jnp.ones((1, 16, 16, 3)), train=False))['params']
    self.assertNotIn('TokenLearnerModuleV11_0', params['Transformer'])


if __name__ == '__main__':
  absltest.main()
