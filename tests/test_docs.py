"""docs/architecture.md names every module of the package and every script."""

import glob
import os
import re

from absl.testing import absltest

from tests import testing

ARCHITECTURE = os.path.join(testing.ROOT, 'docs', 'architecture.md')


def module_rows():
  """First cell -> whole row, of the doc's tables."""
  with open(ARCHITECTURE) as f:
    rows = [line for line in f if line.startswith('| `')]
  return {re.match(r'\| `([^`]+)`', row).group(1): row for row in rows}


def named(name: str, row: str) -> bool:
  return re.search(rf'`{re.escape(name)}(\.py)?`', row) is not None


class ArchitectureDocTest(absltest.TestCase):

  def test_every_module_is_named_in_its_packages_row(self):
    rows = module_rows()
    package = os.path.join(testing.ROOT, 'tokenlearner_jax')
    missing = []
    for path in glob.glob(os.path.join(package, '**', '*.py'), recursive=True):
      relative = os.path.relpath(path, testing.ROOT)
      name = os.path.basename(path)[:-3]
      if name == '__init__':
        continue
      parts = relative.split(os.sep)
      if len(parts) == 2:  # tokenlearner_jax/<module>.py: a row of its own.
        found = relative in rows
      else:  # A subpackage's module: named in a row of that subpackage.
        prefix = '/'.join(parts[:2]) + '/'
        found = relative in rows or any(
            first.startswith(prefix) and named(name, row)
            for first, row in rows.items())
      if not found:
        missing.append(relative)
    self.assertEqual(missing, [])

  def test_every_script_is_named(self):
    row = module_rows()['scripts/*.py']
    missing = [os.path.basename(path) for path in glob.glob(
        os.path.join(testing.ROOT, 'scripts', '*.py'))
               if not named(os.path.basename(path)[:-3], row)]
    self.assertEqual(missing, [])


if __name__ == '__main__':
  absltest.main()
