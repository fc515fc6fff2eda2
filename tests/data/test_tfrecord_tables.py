"""The label map beside video records: written and read back, bad lines
named (what scripts/make_video_tfrecords.py writes and reads, and
`tokenlearner_jax.export` reads for class names)."""

from absl.testing import absltest

from tokenlearner_jax.data import tfrecord_tables


class LabelMapTest(absltest.TestCase):

  def test_write_read_round_trip(self):
    path = self.create_tempfile().full_path
    label_map = {'x, y': 1, 'a': 0, 'z': 2}
    tfrecord_tables.write_label_map(label_map, path)
    with open(path) as f:
      self.assertEqual(f.read(), 'index,label\n0,a\n1,"x, y"\n2,z\n')
    self.assertEqual(tfrecord_tables.read_label_map(path), label_map)
    no_header = self.create_tempfile(content='3,b\n5,a\n').full_path
    self.assertEqual(tfrecord_tables.read_label_map(no_header),
                     {'b': 3, 'a': 5})

  def test_read_errors_name_file_and_line(self):
    path = self.create_tempfile(content='index,label\n0,a\n1,a\n').full_path
    with self.assertRaisesRegex(tfrecord_tables.LabelMapError,
                                f"{path} line 3: label 'a' is listed twice"):
      tfrecord_tables.read_label_map(path)
    path = self.create_tempfile(content='0,a\nb,1\n').full_path
    with self.assertRaisesRegex(tfrecord_tables.LabelMapError,
                                f'{path} line 2'):
      tfrecord_tables.read_label_map(path)


if __name__ == '__main__':
  absltest.main()
