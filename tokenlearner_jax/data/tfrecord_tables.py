"""The reference's TFRecord tables: 'name@N' shard sets or globs, per
process; the label map beside video records."""

import csv
import os
from typing import Dict, List

import jax
import tensorflow as tf

from tokenlearner_jax import errors
from tokenlearner_jax.configs.data_config import DataConfig

# What to do when a config's records are not there.
HINT = ('set --config.dataset_configs.base_dir to your records (docs/data.md '
        'says how to write them); to try the trainer without data: python -m '
        'tokenlearner_jax.train --config=configs/demo_moving_digits.py '
        '--workdir=DIR')


def sharded_files(base_dir: str, table: str, field: str) -> List[str]:
  """The files of one `tables` entry: 'name@N' or a glob under `base_dir`."""
  if '@' in table:
    prefix, count = table.rsplit('@', 1)
    count = int(count)
    files = [os.path.join(base_dir, f'{prefix}-{i:05d}-of-{count:05d}')
             for i in range(count)]
    if not tf.io.gfile.isdir(base_dir):
      raise errors.MissingFileError(
          f'dataset_configs.base_dir={base_dir} does not exist: no TFRecords '
          f'for {field}={table!r}; {HINT}.')
    missing = [f for f in files if not tf.io.gfile.exists(f)]
    if missing:
      raise errors.MissingFileError(
          f'{field}={table!r}: {len(missing)} of {count} shards are missing, '
          f'e.g. {missing[0]}; {HINT}.')
    return files
  files = sorted(tf.io.gfile.glob(os.path.join(base_dir, table)))
  if not files:
    raise errors.MissingFileError(
        f'{field}={table!r}: no file matches {os.path.join(base_dir, table)}; '
        f'{HINT}.')
  return files


def process_files(files: List[str], field: str) -> List[str]:
  """This process's share of `files` (every process reads distinct files)."""
  if len(files) < jax.process_count():
    raise ValueError(f'{field}: {len(files)} files cannot be shared among '
                     f'{jax.process_count()} processes; write more shards.')
  return files[jax.process_index()::jax.process_count()]


def split_files(dc: DataConfig, split: str) -> List[str]:
  """This process's files of `dataset_configs.tables[split]` under
  `dataset_configs.base_dir`; the error names a split `tables` lacks."""
  if split not in dc.tables:
    raise ValueError(f'dataset_configs.tables has no {split!r} entry '
                     f'(has {sorted(dc.tables)}).')
  field = f'dataset_configs.tables.{split}'
  return process_files(sharded_files(dc.base_dir, dc.tables[split], field),
                       field)


# The class names of video records: `index,label` lines under this header,
# beside the records (scripts/make_video_tfrecords.py writes it).
LABEL_MAP_FILE = 'label_map.csv'
LABEL_MAP_HEADER = ['index', 'label']


class LabelMapError(errors.KnownFault, ValueError):
  """A label map that does not read (its file and line named)."""


def read_label_map(path: str) -> Dict[str, int]:
  """label -> index of `index,label` lines (the header is optional)."""
  if not tf.io.gfile.exists(path):
    raise LabelMapError(f'--label_map={path}: no such file.')
  label_map, seen_ids = {}, {}
  with tf.io.gfile.GFile(path, 'r') as f:
    for line, fields in enumerate(csv.reader(f), start=1):
      if not fields or (line == 1 and fields == LABEL_MAP_HEADER):
        continue
      if len(fields) != 2 or not fields[0].strip().isdigit():
        raise LabelMapError(f'--label_map={path} line {line}: expected '
                            f'"index,label", got {fields}.')
      index, label = int(fields[0]), fields[1].strip()
      if label in label_map:
        raise LabelMapError(f'--label_map={path} line {line}: label '
                            f'{label!r} is listed twice.')
      if index in seen_ids:
        raise LabelMapError(f'--label_map={path} line {line}: index {index} '
                            f'is also {seen_ids[index]!r}.')
      label_map[label], seen_ids[index] = index, label
  if not label_map:
    raise LabelMapError(f'--label_map={path}: no label.')
  return label_map


def write_label_map(label_map: Dict[str, int], path: str) -> None:
  """Writes `label_map` as `index,label` lines under a header, by index."""
  with tf.io.gfile.GFile(path, 'w') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(LABEL_MAP_HEADER)
    for label, index in sorted(label_map.items(), key=lambda item: item[1]):
      writer.writerow([index, label])
