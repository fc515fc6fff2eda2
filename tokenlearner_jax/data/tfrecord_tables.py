"""The reference's TFRecord tables: 'name@N' shard sets or globs, per
process."""

import os
from typing import List

import jax
import ml_collections
import tensorflow as tf

from tokenlearner_jax import errors

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


def split_files(dc: ml_collections.ConfigDict, split: str) -> List[str]:
  """This process's files of `dataset_configs.tables[split]` under
  `dataset_configs.base_dir`; the error names a split `tables` lacks."""
  if split not in dc.tables:
    raise ValueError(f'dataset_configs.tables has no {split!r} entry '
                     f'(has {sorted(dc.tables)}).')
  field = f'dataset_configs.tables.{split}'
  return process_files(sharded_files(dc.base_dir, dc.tables[split], field),
                       field)
