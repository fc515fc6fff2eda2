"""What a fresh interpreter imports."""

import subprocess
import sys

from absl.testing import absltest

from tests.testing import ROOT


class ImportsTest(absltest.TestCase):

  def test_steps_and_the_model_benchmark_import_without_tensorflow(self):
    # GPU images often have jax but no TensorFlow: the steps and
    # scripts/benchmark.py's model part must not need it.
    code = ('import sys; import tokenlearner_jax.train_steps; '
            'from tokenlearner_jax.configs import common; '
            'common.load_module("scripts/benchmark.py"); '
            'print(sorted(m for m in sys.modules if m.split(".")[0] in '
            '("tensorflow", "tensorflow_datasets")))')
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    self.assertEqual(result.stdout.strip(), '[]')


if __name__ == '__main__':
  absltest.main()
