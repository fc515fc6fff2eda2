"""studies.report: a results file's marked sections."""

import os

from absl.testing import absltest

from tokenlearner_jax.studies import report


class SectionTest(absltest.TestCase):

  def test_a_section_is_replaced_or_appended_and_the_rest_kept(self):
    path = os.path.join(self.create_tempdir().full_path, 'results.md')
    with open(path, 'w') as f:
      f.write('# Studies\n\nkept text\n')
    report.write_section(path, report.section('a', ['one']))
    report.write_section(path, report.section('b', ['two']))
    report.write_section(path, report.section('a', ['three', 'lines']))
    with open(path) as f:
      self.assertEqual(f.read(), '# Studies\n\nkept text\n\n<!-- a -->\n'
                       'three\nlines\n<!-- /a -->\n\n<!-- b -->\ntwo\n'
                       '<!-- /b -->\n')

  def test_heading_and_seeds(self):
    self.assertEqual(
        report.heading('T', 'cmd', 'Setting.', ('alt', 'p.png')),
        ['## T', '', 'Regenerate: `cmd`', '', '![alt](p.png)', '',
         'Setting.', ''])
    self.assertEqual(report.seeds_and_interval([0, 1, 2]),
                     "seed (0, 1, 2); with 3 seeds the 95% interval's "
                     'half-width is 4.3 standard errors.')


if __name__ == '__main__':
  absltest.main()
