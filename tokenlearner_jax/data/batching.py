"""What every input pipeline hands the trainer: `Data`, padded eval batches.

Batches are dicts of NumPy arrays for this process: `inputs` (float32),
`label` (one-hot or multi-hot float32) and, for eval, `batch_mask` (1 for real
examples, 0 for padding, so every example counts exactly once). Multi-view
test batches have `inputs` of shape `[videos, views, *input_shape]`.
"""

import dataclasses
from typing import Callable, Dict, Iterator, Optional, Tuple

import jax
from jax.experimental import multihost_utils
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tokenlearner_jax.configs.data_config import DataConfig

Batch = Dict[str, np.ndarray]


@dataclasses.dataclass
class SkippedExamples:
  """Examples that `dataset_configs.skip_corrupt_examples` skipped.

  Attributes:
    train: In this process's train stream so far.
    last_pass: In the latest pass over an eval or test split.
  """
  train: int = 0
  last_pass: int = 0


@dataclasses.dataclass
class Data:
  """An endless train iterator, ways to iterate over eval splits, and facts.

  Attributes:
    train_iter: Endless iterator of train batches for this process; None when
      only the eval side was built (`input_pipeline.get_data(...,
      train=False)`).
    eval_batches: Returns a fresh iterator over the eval split (one view per
      example), padded; what the trainer evaluates periodically.
    num_classes: Number of classes.
    input_shape: Shape of one example's input (one view).
    num_train_examples: Examples in the train split (all processes).
    num_eval_examples: Examples in the eval split (all processes).
    test_batches: Returns a fresh iterator over a split with the multi-view
      test protocol: `inputs` of shape `[batch, num_test_views, *input_shape]`.
    num_test_views: Views per test example (clips x spatial crops).
    test_input_shape: One test view's shape, where it is not `input_shape`
      (a video test at `dataset_configs.test_crop_size`).
    skipped: The examples skipped as corrupt, where the pipeline skips them
      (`skip_corrupt_examples`); else None.
  """
  train_iter: Optional[Iterator[Batch]]
  eval_batches: Callable[[], Iterator[Batch]]
  num_classes: int
  input_shape: Tuple[int, ...]
  num_train_examples: int
  num_eval_examples: int
  test_batches: Optional[Callable[[str], Iterator[Batch]]] = None
  num_test_views: int = 1
  test_input_shape: Optional[Tuple[int, ...]] = None
  skipped: Optional[SkippedExamples] = None


def per_process(batch_size: int, field: str) -> int:
  """This process's share of a global batch size named `field`."""
  if batch_size % jax.process_count():
    raise ValueError(f'{field}={batch_size} must be divisible by the number of '
                     f'processes {jax.process_count()}.')
  return batch_size // jax.process_count()


def padded_eval_batch_size(batch_size: int, field: str) -> int:
  """This process's eval batch, rounded up to fill its local devices.

  Eval batches are padded and masked anyway, so any `field` value works on
  any device count: the batch only grows to the next multiple.
  """
  local = per_process(batch_size, field)
  devices = jax.local_device_count()
  return -(-local // devices) * devices


def skip_to_step(enumerated: tf.data.Dataset, batch_size: int,
                 start_step: int, global_order: bool = False
                 ) -> tf.data.Dataset:
  """Skips the examples of the first `start_step` train batches.

  Applied to the shuffled, enumerated stream before any decoding, so a
  resumed run sees exactly the examples (and, through `example_seed`, the
  augmentation) an uninterrupted run would. The stream is this process's, or
  with `global_order` the global one.
  """
  per_step = (batch_size if global_order
              else per_process(batch_size, 'batch_size'))
  return enumerated.skip(start_step * per_step)


def keep_process_rows(enumerated: tf.data.Dataset,
                      batch_size: int) -> tf.data.Dataset:
  """This process's rows of each global batch of a global, enumerated stream.

  Process p keeps rows `[p * local, (p + 1) * local)` of every global batch,
  which `jax.make_array_from_process_local_data` puts back in place: the
  global batches are those of a single-process run, whatever the process
  count.
  """
  local = per_process(batch_size, 'batch_size')
  process = jax.process_index()
  return enumerated.filter(
      lambda i, _: tf.equal((i % batch_size) // local, process))


def example_seed(rng_seed: int, index: tf.Tensor,
                 global_order: bool = False) -> tf.Tensor:
  """A stateless seed for the `index`-th train example of this process.

  Augmentation draws from it, so a run's inputs depend only on `rng_seed`
  and the example's position in the stream, never on thread timing. With
  `global_order`, `index` already counts the global stream.
  """
  stream = (index if global_order
            else index * jax.process_count() + jax.process_index())
  return tf.stack([tf.constant(rng_seed, tf.int64), stream])


def with_options(ds: tf.data.Dataset,
                 dc: DataConfig) -> tf.data.Dataset:
  """`ds` with the tf.data options of `dataset_configs`.

  `dataset_configs.autotune` (default True): tf.data's autotuning of
  parallelism and buffers. False runs parallel maps with one thread per core
  and no tuning thread: on a machine with few cores this leaves more CPU to
  the train step, and an iterator is released at once (with autotuning,
  releasing one waits for the tuning thread's next wake-up, up to a minute,
  which delays a run's exit).
  """
  options = tf.data.Options()
  options.autotune.enabled = dc.autotune
  return ds.with_options(options)


def to_numpy(ds: tf.data.Dataset) -> Iterator[Batch]:
  return ({k: np.asarray(v) for k, v in b.items()}
          for b in tfds.as_numpy(ds))


def padded(ds: tf.data.Dataset, batch_size: int) -> Iterator[Batch]:
  """Batches `ds` once, padding the last batch with masked zeros.

  An empty `ds` gives one fully masked batch, so that every process has a
  batch to bring to the collective eval step.
  """
  seen = False
  for batch in to_numpy(ds.batch(batch_size)):
    seen = True
    yield _pad(batch, batch_size)
  if not seen:
    yield _pad({k: np.zeros((0,) + tuple(s.shape), s.dtype.as_numpy_dtype)
                for k, s in ds.element_spec.items()}, batch_size)


def _pad(batch: Batch, batch_size: int) -> Batch:
  """Pads to `batch_size`; `batch_mask` also drops examples whose optional
  `example_mask` is 0 (e.g. ImageNet ReaL images without a label)."""
  n = len(next(iter(batch.values())))
  example_mask = batch.pop('example_mask', np.ones(n, np.float32))
  batch = {k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:],
                                          v.dtype)]) for k, v in batch.items()}
  batch['batch_mask'] = np.zeros(batch_size, np.float32)
  batch['batch_mask'][:n] = example_mask
  return batch


def in_lockstep(batches: Iterator[Batch]) -> Iterator[Batch]:
  """Yields until every process is out of batches.

  Processes can hold different numbers of eval examples; one that is done
  brings fully masked batches to the collective step until all are done.
  """
  if jax.process_count() == 1:
    yield from batches
    return
  last = None
  while True:
    batch = next(batches, None)
    done = multihost_utils.process_allgather(np.asarray(batch is None))
    if np.all(done):
      return
    if batch is None:
      batch = {k: np.zeros_like(v) for k, v in last.items()}
    last = batch
    yield batch
