"""Tests of `ModelConfig`: reading `config.model`, defaults, every check."""

import dataclasses

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import ml_collections

from tests.testing import model_only_config
from tokenlearner_jax.models import build_model
from tokenlearner_jax.models import config as config_lib
from tokenlearner_jax.models import ModelConfig

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
      ('smaller_than_patch', 'dynamic', (1, 3, 16, 3), 'smaller than one patch'),
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
                                          train=False), jnp.ones((1, 18, 16, 3)))
    self.assertIn('2 bottom rows', '\n'.join(logs.output))


if __name__ == '__main__':
  absltest.main()
