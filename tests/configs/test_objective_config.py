"""configs.objective_config: the train step's top-level objective keys read,
checked and defaulted; the schema's rows are its fields."""

from absl.testing import absltest
import ml_collections

from tests.testing import config_for
from tokenlearner_jax import errors
from tokenlearner_jax.configs import schema
from tokenlearner_jax.configs.objective_config import ObjectiveConfig


class ObjectiveConfigTest(absltest.TestCase):

  def test_a_config_file_is_read_with_the_defaults_it_leaves_unset(self):
    config = config_for('demo_moving_digits')
    config.mixup = ml_collections.ConfigDict(dict(alpha=0.2))
    config.label_smoothing = 0.1
    objective = ObjectiveConfig.from_config(config)
    self.assertEqual((objective.mixup_alpha, objective.label_smoothing),
                     (0.2, 0.1))
    self.assertEqual(ObjectiveConfig.from_config(ml_collections.ConfigDict()),
                     ObjectiveConfig(fast=False))
    # im1k's head starts at the reference's bias.
    self.assertEqual(
        ObjectiveConfig.from_config(config_for('im1k_token_learner'))
        .init_head_bias, config_for('im1k_token_learner').init_head_bias)

  def test_bad_values_name_the_key_before_anything_runs(self):
    for key, value, message in (
        ('label_smoothing', 1.0, r'config\.label_smoothing must be in '
         r'\[0, 1\), got 1\.0'),
        ('sam_rho', -0.1, r'config\.sam_rho must be a number >= 0, got -0\.1'),
        ('fast', 'yes', r"config\.fast must be True or False, got 'yes'"),
        ('init_head_bias', 'low', r"config\.init_head_bias must be a number")):
      config = config_for('demo_moving_digits')
      if key in config:  # A new type: not an override of the old one.
        del config[key]
      config[key] = value
      with self.assertRaisesRegex(errors.ConfigError, message):
        schema.complete(config)
    config = config_for('demo_moving_digits')
    config.mixup = ml_collections.ConfigDict(dict(alpha=-1))
    with self.assertRaisesRegex(errors.ConfigError,
                                r'config\.mixup\.alpha must be a number >= 0'):
      schema.complete(config)

  def test_the_schema_rows_are_its_fields(self):
    rows = {entry.key: entry for entry in schema.KEYS}
    for key in ('label_smoothing', 'l2_decay_factor', 'sam_rho',
                'mixup.alpha', 'init_head_bias', 'fast'):
      self.assertEqual(rows[key].status, schema.IMPLEMENTED, key)
    self.assertIs(rows['fast'].default, False)  # Filled by `complete`.
    self.assertIs(rows['sam_rho'].default, schema.NO_DEFAULT)


if __name__ == '__main__':
  absltest.main()
