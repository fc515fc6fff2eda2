"""Tests of `tokenlearner_jax.train_steps` (the steps themselves also run in
tests/test_train.py and tests/models/test_speed_options.py)."""

import subprocess
import sys

from absl.testing import absltest
import jax
import ml_collections
import numpy as np

from tests.testing import ROOT
from tests.testing import config_for
from tokenlearner_jax import optim
from tokenlearner_jax import sharding
from tokenlearner_jax import train_steps
from tokenlearner_jax.models import build_model


class TrainStepsTest(absltest.TestCase):

  def test_batch_not_divisible_by_data_parallel_size_is_named(self):
    config = config_for('demo_moving_digits')
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1),
                             ('data', 'fsdp', 'model'))
    train_steps.check_batch_sizes(config, mesh)  # Any batch splits over 1.
    mesh = ml_collections.ConfigDict(dict(shape=dict(data=4, fsdp=2)))
    config.batch_size = 12
    with self.assertRaisesRegex(ValueError,
                                r'batch_size=12 .* data-parallel size 8'):
      train_steps.check_batch_sizes(config, mesh)

  def test_jitted_steps_and_the_parameters_without_an_optimizer(self):
    config = config_for('demo_moving_digits')
    config.model.num_layers = 2
    input_shape = (8, 32, 32, 3)
    model = build_model(config, 4)
    tx, schedule = optim.make_optimizer(config, 10)
    mesh = sharding.make_mesh(config)
    state, shardings = train_steps.create_train_state(config, model, tx,
                                                      input_shape, mesh)
    target, params_shardings = train_steps.abstract_params(config, model,
                                                           input_shape, mesh)
    self.assertEqual(params_shardings, shardings.params)
    self.assertEqual(
        jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), target),
        jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), state.params))
    batch_sharding = sharding.batch_sharding(mesh)
    batch = jax.device_put({
        'inputs': np.zeros((config.batch_size,) + input_shape, np.float32),
        'label': np.eye(4, dtype=np.float32)[
            np.arange(config.batch_size) % 4],
        'batch_mask': np.ones(config.batch_size, np.float32)}, batch_sharding)
    eval_step = train_steps.make_eval_step(model, shardings.params,
                                           batch_sharding, multilabel=False)
    sums, _ = eval_step(state.params, batch)
    self.assertEqual(float(sums['num_examples']), config.batch_size)
    train_step = train_steps.make_train_step(
        config, model, tx, schedule, shardings, batch_sharding,
        multilabel=False)
    new_state, step_metrics = train_step(
        state, {k: batch[k] for k in ('inputs', 'label')})
    self.assertEqual(int(new_state.step), 1)
    self.assertTrue(np.isfinite(float(step_metrics['loss'])))
    self.assertTrue(state.step.is_deleted())  # Donated to the new state.

  def test_steps_and_the_model_benchmark_import_without_tensorflow(self):
    # GPU images often have jax but no TensorFlow: the steps and
    # scripts/benchmark.py's model part must not need it.
    code = ('import sys; import tokenlearner_jax.train_steps; '
            'from tests.scripts import load_script; load_script("benchmark"); '
            'print(sorted(m for m in sys.modules if m.split(".")[0] in '
            '("tensorflow", "tensorflow_datasets")))')
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    self.assertEqual(result.stdout.strip(), '[]')


if __name__ == '__main__':
  absltest.main()
