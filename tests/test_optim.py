"""Schedules and optimizers from the reference's config keys."""

from absl.testing import absltest
import ml_collections
import numpy as np

from tokenlearner_jax import optim


def lr_configs(factors, **kwargs):
  return ml_collections.ConfigDict(dict(
      learning_rate_schedule='compound', factors=factors,
      base_learning_rate=0.1, **kwargs))


class ScheduleTest(absltest.TestCase):

  def test_warmup_cosine(self):
    schedule = optim.make_schedule(lr_configs(
        'constant * cosine_decay * linear_warmup', warmup_steps=10,
        steps_per_cycle=110), 110)
    np.testing.assert_allclose(
        [schedule(s) for s in (0, 5, 10, 60, 110)],
        [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-7)

  def test_warmup_linear_decay_to_end(self):
    schedule = optim.make_schedule(lr_configs(
        'constant * linear_warmup * linear_decay', warmup_steps=10,
        end_learning_rate=1e-3, total_steps=110), 110)
    np.testing.assert_allclose([schedule(s) for s in (5, 10, 60, 110)],
                               [0.05, 0.1, 0.0505, 1e-3], rtol=1e-5)

  def test_unknown_factor(self):
    with self.assertRaisesRegex(ValueError, 'lr_configs.factors'):
      optim.make_schedule(lr_configs('constant * cosine'), 10)

  def test_unknown_optimizer(self):
    config = ml_collections.ConfigDict(dict(
        optimizer='lamb', lr_configs=lr_configs('constant')))
    with self.assertRaisesRegex(ValueError, 'config.optimizer'):
      optim.make_optimizer(config, 10)


if __name__ == '__main__':
  absltest.main()
