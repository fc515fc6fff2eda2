"""scripts/make_charades_tfrecords.py: Charades' CSVs and videos to
TFRecords with video labels and action segments; bad rows and videos."""

import os

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from tests.testing import load_script
from tests.testing import write_charades_folder

mct = load_script('make_charades_tfrecords')

VIDEOS = {'train': [('46GP8', 'c092 0.10 1.20;c147 0.00 1.90;c092 1.50 1.90'),
                    ('N11GT', ''), ('0IH69', 'c000 0.50 1.00')]}


def parse(paths):
  """Each record's context and frame count, in shard order."""
  out = []
  for path in paths:
    for record in tf.data.TFRecordDataset(path):
      example = tf.train.SequenceExample.FromString(record.numpy())
      context = example.context.feature
      out.append(dict(
          id=context['clip/media_id'].bytes_list.value[0].decode(),
          labels=list(context['clip/label/index'].int64_list.value),
          fps=list(context['video/fps'].float_list.value),
          segments=list(zip(context['segment/label/index'].int64_list.value,
                            context['segment/start'].float_list.value,
                            context['segment/end'].float_list.value)),
          frames=len(example.feature_lists.feature_list['image/encoded']
                     .feature)))
  return out


class CharadesWriterTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir().full_path
    self.video_dir, self.csvs = write_charades_folder(self.dir, VIDEOS)

  def convert(self, **kwargs):
    return mct.convert(self.csvs['train'], self.video_dir,
                       os.path.join(self.dir, 'out'), split='train',
                       num_shards=1, min_resize=0, **kwargs)

  def test_labels_segments_and_frames_at_each_fps(self):
    for fps in (6.0, 12.0):
      summary = self.convert(fps=fps)
      self.assertEqual(summary.shard_counts, [3])
      records = parse(summary.shard_paths)
      self.assertEqual([r['id'] for r in records], ['46GP8', 'N11GT', '0IH69'])
      self.assertEqual([r['labels'] for r in records], [[92, 147], [], [0]])
      self.assertEqual([r['frames'] for r in records], [int(2 * fps)] * 3)
      self.assertEqual(records[0]['fps'], [fps])
      np.testing.assert_allclose(
          np.array(records[0]['segments']),
          [[92, 0.1, 1.2], [147, 0.0, 1.9], [92, 1.5, 1.9]], atol=1e-6)
      self.assertEqual(records[1]['segments'], [])
      self.assertEqual(summary.num_classes, 3)

  def test_a_bad_action_names_the_file_line_and_id(self):
    path = os.path.join(self.dir, 'bad.csv')
    with open(self.csvs['train']) as f:
      lines = f.read().splitlines()
    lines[2] = lines[2].replace(',,', ',c12 1.0,', 1)  # N11GT's empty actions.
    with open(path, 'w') as f:
      f.write('\n'.join(lines) + '\n')
    with self.assertRaisesRegex(
        mct.ConversionError,
        rf"^--csv={path} line 3 \(id N11GT\): action 'c12 1.0' is not "):
      mct.read_rows(path)

  def test_a_class_past_c156_is_refused(self):
    for item in ('c157 0 1', 'c999 0 1'):
      with self.assertRaisesRegex(mct.ConversionError,
                                  f"x: action '{item}': Charades has 157 "
                                  'classes, c000-c156'):
        mct.parse_actions(f'c156 0 1;{item}', 'x')

  def test_an_action_ending_before_its_start_is_the_interval_between(self):
    self.assertEqual(mct.parse_actions('c005 3.5 1.25; c010 0 2', 'x'),
                     (mct.Action(5, 1.25, 3.5), mct.Action(10, 0.0, 2.0)))

  def test_a_short_row_and_a_wrong_header(self):
    path = os.path.join(self.dir, 'short.csv')
    with open(path, 'w') as f:
      f.write(','.join(mct.COLUMNS) + '\nABC,S1\n')
    with self.assertRaisesRegex(mct.ConversionError,
                                rf'^--csv={path} line 2: 11 columns'):
      mct.read_rows(path)
    with open(path, 'w', encoding='utf-8-sig') as f:  # A byte order mark.
      f.write(','.join(mct.COLUMNS) + '\nABC,S1,,,,,,,,c001 0 1,3\n')
    self.assertEqual(mct.read_rows(path),
                     [mct.Row('ABC', (mct.Action(1, 0.0, 1.0),), 2)])
    with open(path, 'w') as f:
      f.write('path,label\na.mp4,x\n')
    with self.assertRaisesRegex(mct.ConversionError, r"lacks the column\(s\) "
                                r"\['id', 'actions'\]"):
      mct.read_rows(path)

  def test_a_missing_video_stops_or_is_skipped(self):
    os.remove(os.path.join(self.video_dir, 'N11GT.mp4'))
    with self.assertRaisesRegex(
        mct.mvt.BadVideoError,
        rf'^--csv={self.csvs["train"]} line 3 \(id N11GT\): .*N11GT.mp4: no '
        'such video file'):
      self.convert()
    summary = self.convert(skip_bad_videos=True)
    self.assertEqual(summary.shard_counts, [2])
    self.assertLen(summary.skipped, 1)
    self.assertIn('N11GT', mct.format_summary(summary))

  def test_fps_other_than_6_or_12_is_refused(self):
    with self.assertRaisesRegex(mct.ConversionError, r'--fps=25.0'):
      self.convert(fps=25.0)


if __name__ == '__main__':
  absltest.main()
