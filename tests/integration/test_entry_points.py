"""Each entry point, run as users run it, answers a fault it knows in one
`Error:` line (exit status 1, no traceback)."""

import os
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized

from tests import testing
from tests.testing import ROOT


class EntryPointErrorTest(parameterized.TestCase):

  @parameterized.parameters('summary', 'train')
  def test_a_config_error(self, module):
    directory = self.create_tempdir().full_path
    workdir = ([f'--workdir={os.path.join(directory, "run")}']
               if module == 'train' else [])
    self.assert_one_line(
        module, [f'--config={testing.typo_config_file(directory)}', *workdir],
        testing.TYPO)

  @parameterized.parameters(('evaluate', 'evaluate'),
                            ('visualize', 'visualise'),
                            ('fewshot', 'fewshot'))
  def test_a_missing_workdir_is_not_created(self, module, verb):
    parent = self.create_tempdir().full_path
    missing = os.path.join(parent, 'mistyped', 'path')
    config = 'demo_multi_digits' if module == 'fewshot' else 'vivit_k400'
    self.assert_one_line(
        module, [f'--config={ROOT}/configs/{config}.py:runlocal',
                 f'--workdir={missing}'],
        f'--workdir={missing} does not exist (no run to {verb} there).')
    self.assertEqual(os.listdir(parent), [])

  def assert_one_line(self, module, args, message):
    result = subprocess.run(
        [sys.executable, '-m', f'tokenlearner_jax.{module}', *args],
        capture_output=True, text=True, check=False, cwd=ROOT)
    self.assertEqual(result.returncode, 1, result.stderr[-3000:])
    self.assertNotIn('Traceback', result.stderr)
    self.assertEqual(result.stderr.strip().splitlines()[-1],
                     f'Error: {message}')


if __name__ == '__main__':
  absltest.main()
