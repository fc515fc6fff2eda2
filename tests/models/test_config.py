"""Tests of `ModelConfig`: reading `config.model`, defaults, every check."""

import dataclasses

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tests.testing import model_only_config
from tokenlearner_jax.models import build_model
from tokenlearner_jax.models import common
from tokenlearner_jax.models import config as config_lib
from tokenlearner_jax.models import ModelConfig
from tokenlearner_jax.models.common import StochasticDepth

NUM_CLASSES = 7


def minimal_config():
  """Only the keys a model needs: the rest take ModelConfig's defaults."""
  config = ml_collections.ConfigDict()
  config.model = dict(hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64,
                      classifier='gap',
                      tokenizer=dict(type='dynamic', patches=dict(size=(4, 4)),
                                     tokenlearner_loc=1))
  return config


class ReadingTest(parameterized.TestCase):

  def test_missing_keys_take_the_reference_defaults(self):
    model = ModelConfig.from_config(minimal_config(), NUM_CLASSES)
    self.assertEqual(model.dropout_rate, 0.1)
    self.assertEqual(model.attention_dropout_rate, 0.1)
    self.assertTrue(model.use_v11)
    self.assertFalse(model.use_tokenfuse)
    self.assertEqual(model.num_tokens, 8)
    self.assertEqual(model.attention_type, 'spacetime')
    self.assertEqual(model.compute_dtype, jnp.float32)
    self.assertEqual(model.patch_size, (4, 4))

  def test_every_field_has_a_key_and_a_docstring_entry(self):
    doc = ModelConfig.__doc__
    keys = set()
    for f in dataclasses.fields(ModelConfig):
      self.assertIn(f'    {f.name}: ', doc)
      self.assertIn('key', f.metadata)
      keys.add(f.metadata['key'])
    self.assertLen(keys, len(dataclasses.fields(ModelConfig)))

  @parameterized.named_parameters(
      ('tokenizer_typo', ('tokenizer', 'num_tokenz'), 8,
       r'model\.tokenizer\.num_tokenz is not a model setting; did you mean '
       r'model\.tokenizer\.num_tokens\?'),
      ('top_level_typo', ('hiden_size',), 32,
       r'model\.hiden_size .* did you mean model\.hidden_size\?'),
      ('nested_typo', ('tokenizer', 'patches', 'sise'), (4, 4),
       r'model\.tokenizer\.patches\.sise .* model\.tokenizer\.patches\.size'),
  )
  def test_unknown_key_names_the_closest_known(self, path, value, message):
    config = minimal_config()
    node = config.model
    for name in path[:-1]:
      node = node[name]
    node[path[-1]] = value
    with self.assertRaisesRegex(ValueError, message):
      ModelConfig.from_config(config, NUM_CLASSES)

  def test_unknown_encoder_size_key_is_named(self):
    config = model_only_config('video')
    config.model.attention_config = dict(type='factorized_encoder')
    config.model.spatial_transformer = dict(num_layers=1, num_heads=2,
                                            mlp_dims=64)
    config.model.temporal_transformer = dict(num_layers=1, num_heads=2,
                                             mlp_dim=64)
    with self.assertRaisesRegex(ValueError,
                                r'model\.spatial_transformer\.mlp_dims .*'
                                r'model\.spatial_transformer\.mlp_dim\?'):
      ModelConfig.from_config(config, NUM_CLASSES)

  def test_missing_required_key_is_named(self):
    config = minimal_config()
    del config.model['classifier']
    with self.assertRaisesRegex(ValueError, r'model\.classifier is missing'):
      ModelConfig.from_config(config, NUM_CLASSES)

  def test_patch_tokenizer_ignores_a_location_with_a_warning(self):
    config = minimal_config()
    config.model.tokenizer.type = 'patch'
    with self.assertLogs('absl', 'WARNING') as logs:
      model = ModelConfig.from_config(config, NUM_CLASSES)
    self.assertIsNone(model.tokenlearner_loc)
    self.assertIn('ignored', '\n'.join(logs.output))
    with self.assertRaisesRegex(ValueError, "tokenizer.type='patch'"):
      dataclasses.replace(model, tokenlearner_loc=1)

  def test_frozen_and_hashable(self):
    model = ModelConfig.from_config(minimal_config(), NUM_CLASSES)
    with self.assertRaises(dataclasses.FrozenInstanceError):
      model.num_tokens = 16  # pytype: disable=attribute-error
    self.assertEqual(hash(model), hash(dataclasses.replace(model)))

  def test_module_holds_the_config(self):
    model = build_model(minimal_config(), NUM_CLASSES)
    self.assertEqual(model.config.num_classes, NUM_CLASSES)
    self.assertEqual(model.config.tokenlearner_loc, 1)


def vivit_layout(**model_keys):
  """The reference ViViT's layout of a 'mu' ViViT with a class token."""
  config = ml_collections.ConfigDict()
  config.model_name = 'vivit_classification'
  config.model = {
      'hidden_size': 32, 'num_layers': 3, 'num_heads': 2, 'mlp_dim': 64,
      'representation_size': None, 'dropout_rate': 0.0,
      'attention_dropout_rate': 0.0, 'patches': dict(size=(4, 4, 2)),
      'temporal_encoding_config': dict(
          method='3d_conv', kernel_init_method='central_frame_initializer'),
      'attention_config': dict(type='spacetime'), 'classifier': 'token',
      **model_keys}
  return config


class VivitLayoutTest(parameterized.TestCase):

  def test_same_model_as_the_tokenizer_layout(self):
    tokenizer_layout = model_only_config(
        'video', classifier='token',
        kernel_init_method='central_frame_initializer')
    self.assertEqual(ModelConfig.from_config(vivit_layout(), NUM_CLASSES),
                     ModelConfig.from_config(tokenizer_layout, NUM_CLASSES))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 16, 16, 3))
    outputs = []
    for config in (vivit_layout(), tokenizer_layout):
      model = build_model(config, NUM_CLASSES)
      variables = model.init(jax.random.PRNGKey(0), x, train=False)
      outputs.append(model.apply(variables, x, train=False))
    np.testing.assert_array_equal(outputs[0], outputs[1])

  def test_factorised_encoder_in_the_vivit_layout(self):
    config = vivit_layout()
    config.model.attention_config.type = 'factorized_encoder'
    config.model.spatial_transformer = dict(num_layers=2, num_heads=2,
                                            mlp_dim=64)
    config.model.temporal_transformer = dict(num_layers=1, num_heads=2,
                                             mlp_dim=48)
    model = ModelConfig.from_config(config, NUM_CLASSES)
    self.assertEqual(model.attention_type, 'factorized_encoder')
    self.assertEqual(model.temporal_transformer.mlp_dim, 48)

  def test_the_vivit_layout_needs_a_vivit_model_name(self):
    config = vivit_layout()
    config.model_name = 'token_learner_classification'
    with self.assertRaisesRegex(ValueError, r'config\.model_name'):
      ModelConfig.from_config(config, NUM_CLASSES)

  def test_typo_in_the_vivit_layout_is_named(self):
    config = vivit_layout()
    config.model.patches.sizes = (4, 4, 2)
    with self.assertRaisesRegex(ValueError, r'model\.patches\.sizes is not '
                                r'a model setting; did you mean '
                                r'model\.patches\.size\?'):
      ModelConfig.from_config(config, NUM_CLASSES)

  def test_classifier_0_reads_the_first_patch_token(self):
    model = build_model(vivit_layout(classifier='0'), NUM_CLASSES)
    x = jnp.ones((1, 4, 16, 16, 3))
    params = jax.eval_shape(lambda: model.init(
        jax.random.PRNGKey(0), x, train=False))['params']
    self.assertNotIn('cls', params)
    self.assertEqual(params['Transformer']['posembed_input'][
        'pos_embedding'].value.shape, (1, 32, 32))


class DropLayerAndPositionTest(parameterized.TestCase):

  def test_droplayer_keeps_kept_branches_unscaled(self):
    x = jnp.ones((64, 3, 2))
    for rescale, kept_value in ((False, 1.0), (True, 2.0)):
      out = StochasticDepth(0.5, rescale=rescale).apply(
          {}, x, False, rngs={'dropout': jax.random.PRNGKey(0)})
      values = set(np.unique(np.asarray(out)).tolist())
      self.assertEqual(values, {0.0, kept_value})

  def test_one_form_of_stochastic_depth_at_a_time(self):
    with self.assertRaisesRegex(ValueError, 'set one of them'):
      ModelConfig.from_config(
          vivit_layout(stochastic_droplayer_rate=0.2, stochastic_depth=0.1),
          NUM_CLASSES)

  def test_droplayer_rate_is_the_blocks_rate(self):
    model = ModelConfig.from_config(
        vivit_layout(stochastic_droplayer_rate=0.3), NUM_CLASSES)
    self.assertEqual(model.droplayer_rate, 0.3)

  def test_sinusoidal_1d_is_the_definition(self):
    length, dim = 5, 6
    expected = np.zeros((length, dim))
    for pos in range(length):
      for i in range(0, dim, 2):
        rate = np.exp(-i * np.log(1e4) / dim)
        expected[pos, i] = np.sin(pos * rate)
        expected[pos, i + 1] = np.cos(pos * rate)
    np.testing.assert_allclose(common.sinusoidal_1d(length, dim)[0], expected,
                               rtol=1e-6, atol=1e-6)

  def test_sincos_3d_is_the_definition(self):
    t, h, w, dim = 2, 3, 4, 12
    omega = 1.0 / 10_000**(np.arange(2) / 2)
    expected = []
    for z in range(t):
      for y in range(h):
        for x in range(w):
          row = []
          for coordinate in (z, x, y):
            row += list(np.sin(coordinate * omega))
          expected.append(row)
    out = np.asarray(common.sincos_3d(t, h, w, dim))[0]  # [t*h*w, dim]
    # Channels: sin(z), cos(z), sin(x), cos(x), sin(y), cos(y), 2 each.
    sines = out[:, [0, 1, 4, 5, 8, 9]]
    np.testing.assert_allclose(sines, np.asarray(expected), atol=1e-6)
    np.testing.assert_allclose(out[:, 2:4], np.cos(
        np.repeat(np.arange(t), h * w)[:, None] * omega), atol=1e-6)

  @parameterized.parameters('sinusoidal_1d', 'sinusoidal_3d', 'none')
  def test_fixed_embeddings_have_no_parameter(self, kind):
    config = vivit_layout(positional_embedding=kind, classifier='gap',
                          hidden_size=36)
    model = build_model(config, NUM_CLASSES)
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 4, 16, 16, 3))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    self.assertNotIn('posembed_input', variables['params']['Transformer'])
    tokens = jnp.ones((1, 32, 24))
    added = common.add_position_embedding(tokens, kind, temporal_dims=2)
    expected = {'none': np.zeros((1, 32, 24)),
                'sinusoidal_1d': common.sinusoidal_1d(32, 24),
                'sinusoidal_3d': common.sincos_3d(2, 4, 4, 24)}[kind]
    np.testing.assert_allclose(added - tokens, expected, atol=1e-6)

  def test_sinusoidal_3d_needs_six_parts_and_no_class_token(self):
    with self.assertRaisesRegex(ValueError, 'divisible by 6'):
      ModelConfig.from_config(
          vivit_layout(positional_embedding='sinusoidal_3d'), NUM_CLASSES)
    model = build_model(vivit_layout(positional_embedding='sinusoidal_3d',
                                     hidden_size=36), NUM_CLASSES)
    with self.assertRaisesRegex(ValueError, 'no class token'):
      jax.eval_shape(lambda: model.init(
          jax.random.PRNGKey(0), jnp.ones((1, 4, 16, 16, 3)), train=False))


class ConfigErrorTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('loc_too_large', dict(tokenlearner_loc=3), 'tokenlearner_loc'),
      ('loc_negative', dict(tokenlearner_loc=-1), 'tokenlearner_loc'),
      ('classifier', dict(tokenlearner_loc=1, classifier='cls'),
       'model.classifier'),
      ('num_tokens', dict(tokenlearner_loc=1, num_tokens=0),
       r'model\.tokenizer\.num_tokens must be a positive integer'),
      ('dropout', dict(dropout_rate=1.0), r'model\.dropout_rate must be in'),
      ('fuser_without_fuse', dict(tokenlearner_loc=1, fuser_type='unpool'),
       'needs model.tokenizer.use_tokenfuse=True'),
      ('pooling_locs_with_scan', dict(tokenlearner_loc=1,
                                      token_reduction='pooling',
                                      pooling_locs=(2,), scan_layers=True),
       'scan_layers does not take'),
  )
  def test_bad_model_field(self, kwargs, field):
    with self.assertRaisesRegex(ValueError, field):
      build_model(model_only_config(**kwargs), NUM_CLASSES)

  @parameterized.named_parameters(
      ('tokenizer_type', 'model.tokenizer.type', 'pixels',
       'model.tokenizer.type'),
      ('method', 'model.tokenizer.temporal_encoding_config.method', 'fft',
       'temporal_encoding_config.method'),
      ('kernel_init', 'model.tokenizer.temporal_encoding_config.'
       'kernel_init_method', 'random', 'kernel_init_method'),
      ('dtype', 'model_dtype_str', 'float8', 'model_dtype_str'),
      ('heads', 'model.num_heads', 3, 'divisible by model.num_heads'),
      ('patches', 'model.tokenizer.patches.size', (4, 4), r'\(h, w, t\)'),
  )
  def test_bad_enum_or_shape_field(self, path, value, message):
    config = model_only_config('video', tokenlearner_loc=1)
    config.model_dtype_str = 'float32'
    *parents, leaf = path.split('.')
    node = config
    for name in parents:
      node = node[name]
    node[leaf] = value
    with self.assertRaisesRegex(ValueError, message):
      build_model(config, NUM_CLASSES)

  def test_attention_type(self):
    config = model_only_config('video')
    config.model.attention_config = dict(type='axial')
    with self.assertRaisesRegex(ValueError, 'attention_config.type'):
      build_model(config, NUM_CLASSES)

  def test_choices_are_the_modules_options(self):
    self.assertEqual(config_lib.REMAT_POLICIES[0], 'none')
    for policy in config_lib.REMAT_POLICIES[1:]:
      self.assertTrue(hasattr(jax.checkpoint_policies, policy), policy)

  @parameterized.named_parameters(
      ('smaller_than_patch', 'dynamic', (1, 3, 16, 3),
       'smaller than one patch'),
      ('fewer_frames_than_tubelet', 'video', (1, 1, 16, 16, 3),
       'smaller than one tubelet'),
      ('image_to_video_model', 'video', (1, 16, 16, 3), r'\(T, H, W, C\)'),
      ('v10_non_square_grid', 'dynamic', (1, 16, 24, 3), 'square'),
  )
  def test_bad_input_raises_before_compile(self, tokenizer_type, shape,
                                           message):
    config = model_only_config(tokenizer_type, tokenlearner_loc=1,
                         use_v11='square' not in message)
    model = build_model(config, NUM_CLASSES)
    with self.assertRaisesRegex(ValueError, message):
      jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x,
                                          train=False), jnp.ones(shape))

  def test_border_warning_names_the_dropped_pixels(self):
    model = build_model(model_only_config(tokenlearner_loc=1), NUM_CLASSES)
    with self.assertLogs('absl', 'WARNING') as logs:
      jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x,
                                          train=False),
                     jnp.ones((1, 18, 16, 3)))
    self.assertIn('2 bottom rows', '\n'.join(logs.output))


if __name__ == '__main__':
  absltest.main()
