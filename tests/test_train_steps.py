"""Tests of `tokenlearner_jax.train_steps` (the steps themselves run in
tests/test_train.py and tests/models/test_speed_options.py)."""

import os
import subprocess
import sys

from absl.testing import absltest
import jax
import ml_collections
import numpy as np

from tests.test_train import config_for
from tokenlearner_jax import train_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
