"""tokenlearner_jax.configs.common: parse_arg, load_config, model_config."""

import dataclasses
import os
import textwrap
from typing import Optional

from absl.testing import absltest
from absl.testing import parameterized
import ml_collections

from tokenlearner_jax.configs import common
from tokenlearner_jax.models.config import ModelConfig
from tokenlearner_jax.studies import runs


class ParseArgTest(parameterized.TestCase):

  def test_types_and_flags(self):
    arg = common.parse_arg('num_tokens=16,runlocal,name=x,lr=0.5',
                           num_tokens=8, runlocal=False, name=None, lr=1.0)
    self.assertEqual((arg.num_tokens, arg.runlocal, arg.name, arg.lr),
                     (16, True, 'x', 0.5))
    self.assertIsInstance(arg.lr, float)

  def test_defaults_without_arg(self):
    for arg in (None, ''):
      self.assertEqual(common.parse_arg(arg, num_tokens=8).to_dict(),
                       {'num_tokens': 8, 'fast': False})
    self.assertTrue(common.parse_arg('fast', num_tokens=8).fast)

  @parameterized.parameters(('12', 12), ('0', 0), ('None', None))
  def test_optional_int(self, value, expected):
    arg = common.parse_arg(f'tokenlearner_loc={value}',
                           types=dict(tokenlearner_loc=Optional[int]),
                           tokenlearner_loc=18)
    self.assertEqual(arg.tokenlearner_loc, expected)

  def test_optional_int_default_none(self):
    arg = common.parse_arg('loc=3', types=dict(loc=Optional[int]), loc=None)
    self.assertEqual(arg.loc, 3)

  @parameterized.parameters(('True', True), ('true', True), ('1', True),
                            ('yes', True), ('False', False), ('0', False),
                            ('no', False))
  def test_bools(self, value, expected):
    self.assertIs(common.parse_arg(f'flag={value}', flag=not expected).flag,
                  expected)

  @parameterized.parameters(
      ('num_tokens=x', "num_tokens='x': expected int"),
      ('tokenlearner_loc=none', "tokenlearner_loc='none': expected int"),
      ('runlocal=maybe', "runlocal='maybe': expected bool"),
      ('num_tokens', "'num_tokens' needs a value"))
  def test_bad_values_raise(self, arg, message):
    with self.assertRaisesRegex(ValueError, message):
      common.parse_arg(arg, types=dict(tokenlearner_loc=Optional[int]),
                       num_tokens=8, tokenlearner_loc=18, runlocal=False)

  def test_an_unknown_key_names_the_closest(self):
    with self.assertRaisesRegex(ValueError,
                                "'nmu_tokens'; did you mean 'num_tokens'"):
      common.parse_arg('nmu_tokens=4', num_tokens=8, runlocal=False)
    with self.assertRaisesRegex(ValueError, r"'zzz'\. Known"):
      common.parse_arg('zzz=4', num_tokens=8)

  def test_types_must_name_known_keys(self):
    with self.assertRaisesRegex(ValueError, 'loc'):
      common.parse_arg(None, types=dict(loc=Optional[int]), num_tokens=8)


class ModelConfigTest(absltest.TestCase):

  def test_sizes_patches_and_given_fields(self):
    model = common.model_config('L/14', 'video', extra_layers=11,
                                num_tokens=16, tokenlearner_loc=18,
                                classifier='token', dropout_rate=0.0)
    self.assertEqual((model.hidden_size, model.num_heads, model.mlp_dim,
                      model.num_layers), (1024, 16, 4096, 35))
    self.assertEqual(model.tokenizer.type, 'video')
    self.assertEqual(model.tokenizer.patches.size, (14, 14, 2))
    self.assertEqual((model.tokenizer.num_tokens,
                      model.tokenizer.tokenlearner_loc, model.classifier,
                      model.dropout_rate), (16, 18, 'token', 0.0))
    self.assertEqual(common.model_config('B/16').tokenizer.patches.size,
                     (16, 16))

  def test_an_unset_optional_setting_takes_a_command_line_override(self):
    # The README's ToMe example: a model trained without TokenLearner
    # (`tokenlearner_loc=None`) evaluated with `--config...tokenlearner_loc=0`.
    config = runs.resolve('configs/demo_moving_digits.py:tokenlearner_loc=None',
                          {'model.tokenizer.tokenlearner_loc': 0})
    self.assertEqual(config.model.tokenizer.tokenlearner_loc, 0)
    self.assertIsNone(common.model_config('B/16', 'dynamic').tokenizer
                      .tokenlearner_loc)

  def test_the_rest_are_model_configs_defaults(self):
    model = common.model_config('B/16', 'dynamic', tokenlearner_loc=6)
    read = ModelConfig.from_config(
        ml_collections.ConfigDict(dict(model=model)), num_classes=10)
    for field in dataclasses.fields(ModelConfig):
      if field.default is not dataclasses.MISSING and field.name not in (
          'num_layers', 'num_heads', 'mlp_dim', 'tokenlearner_loc'):
        self.assertEqual(getattr(read, field.name), field.default, field.name)
    # The reference's defaults, written only in ModelConfig.
    self.assertEqual((model.dropout_rate, model.attention_dropout_rate),
                     (0.1, 0.1))

  def test_every_model_setting_has_a_key(self):
    # So that `--config.model.<key>=...` can override any of them.
    model = common.model_config('mu/4', 'video')
    for field in dataclasses.fields(ModelConfig):
      key = field.metadata['key']
      if key and not key.startswith('/'):
        node = model
        for part in key.split('.'):
          self.assertIn(part, node, key)
          node = node[part]

  def test_an_unknown_field_names_the_closest(self):
    with self.assertRaisesRegex(ValueError, "did you mean 'num_tokens'"):
      common.model_config('B/16', num_tokns=4)
    with self.assertRaisesRegex(ValueError, "'hidden_size' is not"):
      common.model_config('B/16', hidden_size=4)


class LoadConfigTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.path = os.path.join(self.create_tempdir().full_path, 'tiny.py')
    with open(self.path, 'w') as f:
      f.write(textwrap.dedent('''\
          import ml_collections
          from tokenlearner_jax.configs import common

          def get_config(arg=None):
            arg = common.parse_arg(arg, size=1, runlocal=False)
            return ml_collections.ConfigDict(arg.to_dict())

          def sweep():
            return [{'size': 2}]
          '''))

  def test_path_with_and_without_arg(self):
    self.assertEqual(common.load_config(self.path).size, 1)
    self.assertEqual(common.load_config(f'{self.path}:size=3').size, 3)
    config = common.load_config(self.path, 'size=4,runlocal')
    self.assertEqual((config.size, config.runlocal), (4, True))

  def test_arg_given_twice_raises(self):
    with self.assertRaisesRegex(ValueError, 'Both'):
      common.load_config(f'{self.path}:size=3', 'size=4')

  def test_load_module(self):
    module = common.load_module(self.path)
    self.assertEqual(module.__name__, 'tiny')
    self.assertEqual(module.sweep(), [{'size': 2}])

  def test_not_python_raises(self):
    with self.assertRaises((ValueError, FileNotFoundError)):
      common.load_config(self.path[:-3] + '.txt')


if __name__ == '__main__':
  absltest.main()
