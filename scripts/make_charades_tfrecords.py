r"""Converts Charades as its publishers ship it to video TFRecords.

Reads `Charades_v1_train.csv` or `Charades_v1_test.csv` (columns `id,
subject, scene, quality, relevance, verified, script, objects, descriptions,
actions, length`; `actions` like `c092 11.90 21.20;c147 0.00 12.60`, possibly
empty) and the folder of `<id>.mp4` videos, resamples each video to `--fps`
(12, or 6 for the paper's 6 fps setting) and writes one
`tf.train.SequenceExample` per video (the format `data/video_tfrecords.py`
reads, as `scripts/make_video_tfrecords.py` writes it) with

  sequence 'image/encoded':       one JPEG per frame at `--fps`;
  context  'clip/label/index':    the video's classes (sorted, distinct: the
                                  labels of Charades' video classification);
           'clip/media_id':       [the video id];
           'video/fps':           [the frame rate of the stored frames];
           'segment/label/index': each action's class, in CSV order;
           'segment/start',
           'segment/end':         each action's start and end in seconds;

in `{output_dir}/{split}-{i:05d}-of-{num_shards:05d}`:

  python scripts/make_charades_tfrecords.py \
      --csv=Charades/Charades_v1_train.csv --video_dir=Charades_v1_480 \
      --output_dir=/data/charades_12fps_tfrecords --split=train \
      --num_shards=64 --fps=12 --min_resize=256
  python scripts/make_charades_tfrecords.py \
      --csv=Charades/Charades_v1_test.csv --video_dir=Charades_v1_480 \
      --output_dir=/data/charades_12fps_tfrecords --split=test \
      --num_shards=16 --fps=12 --min_resize=256

Class `cNNN` gets the id NNN (Charades' 157 classes c000-c156). With the
segments a training clip can take the classes of the actions overlapping it
(`dataset_configs.clip_labels='segments'`, the default of
configs/charades_x2plus1d_tl.py) or the video's (`'video'`); docs/data.md
says which and why. A CSV row that cannot be read, or a video that is missing
or does not decode, stops the run with one line naming the CSV, its line and
the video id (`--skip_bad_videos` skips bad videos and lists them at the
end). Videos whose `actions` is empty are written with no label; an action
whose end is before its start is kept as the interval between the two times
(with a warning).
"""

import csv
import os
import re
import sys
from typing import Iterable, List, NamedTuple, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_video_tfrecords as mvt  # pylint: disable=g-import-not-at-top

COLUMNS = ('id', 'subject', 'scene', 'quality', 'relevance', 'verified',
           'script', 'objects', 'descriptions', 'actions', 'length')
NUM_CLASSES = 157  # c000-c156.
ACTION = re.compile(r'c(\d{3})\s+(-?\d+(?:\.\d*)?)\s+(-?\d+(?:\.\d*)?)')
FPS_CHOICES = (6.0, 12.0)
ConversionError = mvt.ConversionError


class Action(NamedTuple):
  """One annotated action: class id, start and end in seconds."""
  label: int
  start: float
  end: float


class Row(NamedTuple):
  """One video of a Charades CSV, and its line in the file."""
  video_id: str
  actions: Tuple[Action, ...]
  line: int


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The command-line flags (defined only when run as the entry point)."""
  fv = dict(flag_values=flag_values)
  flags.DEFINE_string('csv', None, 'Charades_v1_train.csv or '
                      'Charades_v1_test.csv.', required=True, **fv)
  flags.DEFINE_string('video_dir', None, 'The folder of <id>.mp4 videos.',
                      required=True, **fv)
  flags.DEFINE_string('output_dir', None, 'Where the shards are written.',
                      required=True, **fv)
  flags.DEFINE_string('split', 'train', 'Split name: the shard file prefix.',
                      **fv)
  flags.DEFINE_integer('num_shards', 16, 'Number of shard files.', **fv)
  flags.DEFINE_float('fps', 12.0, 'Output frame rate: 12, or 6.', **fv)
  flags.DEFINE_integer('jpeg_quality', 95, 'JPEG quality, 1 to 100.', **fv)
  flags.DEFINE_integer('min_resize', 256, 'If > 0, resize each frame so its '
                       'smaller side is this long (keeping the aspect).', **fv)
  flags.DEFINE_string('extension', 'mp4', 'Video file extension.', **fv)
  flags.DEFINE_enum('decoder', 'pyav', mvt.DECODERS, 'Video decoder.', **fv)
  flags.DEFINE_bool('skip_bad_videos', False, 'Skip (and list) videos that '
                    'are missing or fail to decode, instead of stopping.',
                    **fv)


def parse_actions(text: str, where: str) -> Tuple[Action, ...]:
  """`'c092 11.90 21.20;c147 0.00 12.60'` -> Actions ('' -> none)."""
  actions = []
  for item in filter(None, (part.strip() for part in text.split(';'))):
    match = ACTION.fullmatch(item)
    if not match:
      raise ConversionError(
          f'{where}: action {item!r} is not "cNNN START END" (the actions '
          'column is "cNNN START END" items separated by ";").')
    if int(match[1]) >= NUM_CLASSES:
      raise ConversionError(
          f'{where}: action {item!r}: Charades has {NUM_CLASSES} classes, '
          f'c000-c{NUM_CLASSES - 1:03d}.')
    start, end = float(match[2]), float(match[3])
    if end < start:  # Kept, as the interval between the two times.
      logging.warning('%s: action %r ends before it starts; taking %.2f-%.2f.',
                      where, item, end, start)
      start, end = end, start
    actions.append(Action(int(match[1]), start, end))
  return tuple(actions)


def read_rows(csv_path: str) -> List[Row]:
  """The rows of a Charades CSV (`id` and `actions` are read)."""
  if not tf.io.gfile.exists(csv_path):
    raise ConversionError(f'--csv={csv_path}: no such file.')
  with tf.io.gfile.GFile(csv_path, 'r') as f:
    reader = csv.DictReader(f)
    if reader.fieldnames:  # Without a UTF-8 byte order mark, and spaces.
      reader.fieldnames = [name.lstrip('\ufeff').strip()
                           for name in reader.fieldnames]
    missing = [c for c in ('id', 'actions')
               if c not in (reader.fieldnames or [])]
    if missing:
      raise ConversionError(
          f'--csv={csv_path}: the header {reader.fieldnames} lacks the '
          f'column(s) {missing}; expected the Charades header '
          f'{",".join(COLUMNS)}.')
    rows, seen = [], {}
    for record in reader:
      where = f'--csv={csv_path} line {reader.line_num}'
      if None in record or None in record.values():
        raise ConversionError(f'{where}: {len(reader.fieldnames)} columns '
                              'expected, the row has a different number.')
      video_id = record['id'].strip()
      if not video_id:
        raise ConversionError(f'{where}: empty id.')
      where += f' (id {video_id})'
      if video_id in seen:
        raise ConversionError(f'{where}: the id is also on line '
                              f'{seen[video_id]}.')
      seen[video_id] = reader.line_num
      rows.append(Row(video_id, parse_actions(record['actions'], where),
                      reader.line_num))
  if not rows:
    raise ConversionError(f'--csv={csv_path}: no video listed.')
  return rows


def encode_example(jpegs: Sequence[bytes], row: Row, fps: float) -> bytes:
  """A serialized `tf.train.SequenceExample` of one Charades video."""

  def ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

  def floats(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))

  def strings(values) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

  context = tf.train.Features(feature={
      'clip/label/index': ints(sorted({a.label for a in row.actions})),
      'clip/media_id': strings([row.video_id.encode('utf-8')]),
      'video/fps': floats([fps]),
      'segment/label/index': ints([a.label for a in row.actions]),
      'segment/start': floats([a.start for a in row.actions]),
      'segment/end': floats([a.end for a in row.actions]),
  })
  frames = tf.train.FeatureList(feature=[strings([j]) for j in jpegs])
  return tf.train.SequenceExample(
      context=context, feature_lists=tf.train.FeatureLists(
          feature_list={'image/encoded': frames})).SerializeToString()


def convert(csv_path: str, video_dir: str, output_dir: str,
            split: str = 'train', num_shards: int = 16, fps: float = 12.0,
            jpeg_quality: int = 95, min_resize: int = 256,
            extension: str = 'mp4', decoder: str = 'pyav',
            skip_bad_videos: bool = False) -> mvt.Summary:
  """Converts the videos of a Charades CSV; see the module docstring."""
  if num_shards < 1:
    raise ConversionError(f'--num_shards={num_shards}: must be >= 1.')
  if fps not in FPS_CHOICES:
    raise ConversionError(f'--fps={fps}: Charades is used at 6 or 12 fps.')
  if not 1 <= jpeg_quality <= 100:
    raise ConversionError(f'--jpeg_quality={jpeg_quality}: must be in '
                          '[1, 100].')
  if min_resize < 0:
    raise ConversionError(f'--min_resize={min_resize}: must be >= 0.')
  if not os.path.isdir(video_dir):
    raise ConversionError(f'--video_dir={video_dir}: no such directory.')
  if decoder == 'pyav':
    mvt.import_av()
  else:
    mvt.ffmpeg_binary()
  rows = read_rows(csv_path)
  tf.io.gfile.makedirs(output_dir)
  paths = mvt.shard_paths(output_dir, split, num_shards)
  skipped, total_frames = [], 0

  def examples() -> Iterable[bytes]:
    nonlocal total_frames
    for done, row in enumerate(rows):
      if done and done % 100 == 0:
        logging.info('%d of %d videos converted.', done, len(rows))
      path = os.path.join(video_dir, f'{row.video_id}.{extension}')
      try:
        video = mvt.decode_frames(path, decoder)
      except mvt.BadVideoError as e:
        message = f'--csv={csv_path} line {row.line} (id {row.video_id}): {e}'
        if not skip_bad_videos:
          raise mvt.BadVideoError(
              f'{message} (--skip_bad_videos skips such videos).') from e
        logging.warning('Skipping %s', message)
        skipped.append(message)
        continue
      jpegs = mvt.video_jpegs(video, fps, min_resize, jpeg_quality)
      total_frames += len(jpegs)
      yield encode_example(jpegs, row, fps)

  counts = mvt.write_shards(examples(), paths)
  labels = {a.label for row in rows for a in row.actions}
  return mvt.Summary(paths, counts, len(labels), total_frames, '', False,
                     skipped)


def format_summary(summary: mvt.Summary) -> str:
  """The end-of-run report (no label map: class cNNN is id NNN)."""
  lines = mvt.format_summary(summary).splitlines()
  return '\n'.join(line for line in lines if not line.startswith('Label map'))


def run(flag_values: flags.FlagValues) -> None:
  """Converts as the parsed `flag_values` say, prints the summary.

  Exits with a one-line message on an input error.
  """
  f = flag_values
  try:
    summary = convert(f.csv, f.video_dir, f.output_dir, f.split,
                      f.num_shards, f.fps, f.jpeg_quality, f.min_resize,
                      f.extension, f.decoder, f.skip_bad_videos)
  except (ConversionError, FileNotFoundError, ImportError) as e:
    sys.exit(f'make_charades_tfrecords: error: {e}')
  print(format_summary(summary))


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  run(flags.FLAGS)


if __name__ == '__main__':
  define_flags()
  app.run(main)
