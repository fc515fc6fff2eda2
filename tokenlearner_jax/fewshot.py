r"""Few-shot linear evaluation of frozen features: the paper's 5-shot metric.

  python -m tokenlearner_jax.fewshot --config=configs/demo_multi_digits.py \
      --workdir=/tmp/demo_multi_digits [--step=N]

How the TokenLearner paper compares JFT-pretrained models (its location
figure, its 5-shot ImageNet and nine-dataset averages), in the manner of
big_vision's `evaluators/fewshot_lsr.py`:
  * features: the model's pre-logits, the representation the head's
    `output_projection` reads (`models.common.classifier_head` sows it as
    `intermediates/representation`), of every example of each dataset's train
    and test split, computed by one `jax.jit`-ed function over the mesh (inputs
    sharded on the batch axes, features gathered), parameters frozen;
  * per seed, one permutation of the train split (`numpy` `default_rng(seed)`)
    and, for each class, its first `shots` examples in that order: the few-shot
    set (so a seed's 1-shot set is part of its 5-shot set);
  * on the host, in float64: the features whitened by the few-shot set's mean
    and standard deviation (+1e-5), a constant bias feature `BIAS_CONSTANT`
    appended (large, so that its weight is all but unregularised), targets
    in {-1, +1} (one column per class), and the closed-form ridge regression
    `W = (X^T X + l2 I)^-1 X^T Y`, solved as written when the few-shot set has
    at least as many examples as features, else in the other Gram form
    `X^T (X X^T + l2 I)^-1 Y` (`ridge_weights`);
  * accuracy: the argmax of the test features' scores against their labels,
    over the whole test split.

The L2 strength is fixed, `fewshot.l2_reg` (default 2^10 = 1024, big_vision's
value for these evaluations): with 1 to 25 examples per class there is no
held-out split big enough to choose it without adding more noise than it
removes, and a fixed value keeps the numbers of different checkpoints and
models comparable, which is what the paper's ablations compare.

`config.fewshot` (`configs.fewshot_config.FewshotConfig`; all keys in
docs/config_keys.md): `datasets` (name ->
(tfds name, train split, test split)), `shots`, `num_seeds`, `l2_reg`,
`log_steps` (the trainer runs it every that many steps and at the end),
`image_size` and `crop_fraction` (preprocessing: the smaller side resized to
image_size / crop_fraction, then the central crop; image_size defaults to the
model's input side), `batch_size`, `data_dir` (default
`dataset_configs.data_dir`). Metrics: `<name>_<shots>shot` (the mean over
seeds) and `avg_<shots>shot` (the mean over datasets, the paper's average).
The standalone run restores the model variables of a checkpoint (the latest,
or `--step`) and writes them, with each seed's accuracy, to
`WORKDIR/fewshot.json`; it reads no pre-training data.
"""

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
from ml_collections import config_flags
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tokenlearner_jax import checkpoint
from tokenlearner_jax import errors
from tokenlearner_jax import runtime
from tokenlearner_jax import sharding
from tokenlearner_jax import summary
from tokenlearner_jax import train_steps
from tokenlearner_jax.configs import schema
from tokenlearner_jax.configs.data_config import DataConfig
from tokenlearner_jax.configs.fewshot_config import FewshotConfig
from tokenlearner_jax.data import batching
from tokenlearner_jax.data import image_preprocessing
from tokenlearner_jax.data import input_pipeline
from tokenlearner_jax.models import build_model

Metrics = Dict[str, float]
BIAS_CONSTANT = 100.0

# ------------------------------------------------- the closed form (host)


def select_shots(labels: np.ndarray, num_classes: int, shots: int,
                 seed: int) -> np.ndarray:
  """Indices of the few-shot set: per class, its first `shots` examples in
  the permutation `np.random.default_rng(seed).permutation(len(labels))`
  (fewer where a class has fewer: `check_pool` refuses such a pool before),
  classes in order."""
  order = np.random.default_rng(seed).permutation(len(labels))
  ordered = np.asarray(labels)[order]
  return np.concatenate([order[ordered == c][:shots]
                         for c in range(num_classes)])


def check_pool(labels: np.ndarray, num_classes: int, shots: int,
               where: str) -> None:
  """Raises a `ConfigError` when a class of the few-shot pool has fewer
  than `shots` examples (its few-shot set would silently be smaller)."""
  counts = np.bincount(np.asarray(labels), minlength=num_classes)
  short = np.flatnonzero(counts < shots)
  if short.size:
    raise errors.ConfigError(
        f'config.fewshot.shots asks for {shots} examples per class but the '
        f'pool of {where} has {counts[short[0]]} of class {short[0]} '
        f'({short.size} of {num_classes} classes have fewer than {shots}); '
        'ask for fewer shots or use a larger pool split.')


def whiten(train: np.ndarray,
           test: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Both `[N, D]` sets standardised by `train`'s per-feature mean and
  standard deviation (+1e-5), in float64, each with the bias feature
  appended: `[N, D + 1]`."""
  train, test = np.float64(train), np.float64(test)
  mean = train.mean(0, keepdims=True)  # [1, D]
  std = train.std(0, keepdims=True) + 1e-5  # [1, D]

  def with_bias(x: np.ndarray) -> np.ndarray:
    return np.concatenate([(x - mean) / std,
                           np.full((len(x), 1), BIAS_CONSTANT)], axis=1)

  return with_bias(train), with_bias(test)


def signed_targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """`[N]` class ids -> `[N, C]` float64: +1 at the class, -1 elsewhere."""
  return 2.0 * np.eye(num_classes)[np.asarray(labels)] - 1.0


def ridge_weights(x: np.ndarray, y: np.ndarray, l2_reg: float) -> np.ndarray:
  """`argmin_W ||X W - Y||^2 + l2_reg ||W||^2`, `[D, C]`, in float64.

  The normal equations in the smaller Gram matrix: `(X^T X + l2 I)^-1 X^T Y`
  (D x D) when N >= D, else `X^T (X X^T + l2 I)^-1 Y` (N x N), the same
  solution (push-through identity).
  """
  x, y = np.float64(x), np.float64(y)
  n, d = x.shape
  if n >= d:
    return np.linalg.solve(x.T @ x + l2_reg * np.eye(d), x.T @ y)  # [D, C]
  return x.T @ np.linalg.solve(x @ x.T + l2_reg * np.eye(n), y)  # [D, C]


def linear_accuracy(train_x: np.ndarray, train_labels: np.ndarray,
                    test_x: np.ndarray, test_labels: np.ndarray,
                    num_classes: int, l2_reg: float) -> float:
  """Test accuracy of the ridge classifier fitted on the few-shot set."""
  train_x, test_x = whiten(train_x, test_x)
  w = ridge_weights(train_x, signed_targets(train_labels, num_classes),
                    l2_reg)
  return float(np.mean(np.argmax(test_x @ w, axis=1) == test_labels))


def seed_accuracies(train: Tuple[np.ndarray, np.ndarray],
                    test: Tuple[np.ndarray, np.ndarray], num_classes: int,
                    shots: Sequence[int], num_seeds: int,
                    l2_reg: float) -> Dict[int, List[float]]:
  """shots -> the accuracy of each seed 0..num_seeds-1, from the features
  and labels of the whole train and test splits."""
  results: Dict[int, List[float]] = {int(k): [] for k in shots}
  for seed in range(num_seeds):
    for k in shots:
      idx = select_shots(train[1], num_classes, k, seed)
      results[int(k)].append(linear_accuracy(
          train[0][idx], train[1][idx], test[0], test[1], num_classes,
          l2_reg))
  return results


# ------------------------------------------------------------ the config


def variables_of(state: train_steps.TrainState) -> Dict[str, Any]:
  """A train state's model variables: `{'params': ...}` and its model state
  (e.g. BatchNorm statistics; `train_steps.model_variables`)."""
  return train_steps.model_variables(state.params, state.model_state)


def enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether `config` asks for few-shot evaluations."""
  return bool(config.get('fewshot') and config.fewshot.get('datasets'))


# ------------------------------------------------------------ the features


class FewShotEvaluator:
  """Few-shot accuracies of a model's parameters on `config.fewshot`'s
  datasets; the tf.data pipelines are built once, on first use.

  Attributes:
    settings: The checked `config.fewshot` with its defaults.
    model: The flax module (its head sows `intermediates/representation`).
    mesh: The device mesh the batches are sharded over.
    image_size: The side the images are resized to.
  """

  def __init__(self, config: ml_collections.ConfigDict, model: Any, mesh: Any,
               input_shape: Sequence[int]):
    self.settings = FewshotConfig.from_config(config)
    if len(input_shape) != 3:
      raise errors.ConfigError(
          'config.fewshot: the few-shot evaluation is of image models; this '
          f'model takes inputs of shape {tuple(input_shape)}.')
    self.model, self.mesh = model, mesh
    self.image_size = int(self.settings.image_size or input_shape[0])
    self._splits: Dict[Tuple[str, str], Any] = {}
    self._num_classes: Dict[str, int] = {}
    self._feature_fn = jax.jit(self._features,
                               out_shardings=NamedSharding(mesh, P()))
    self.check_datasets()

  def check_datasets(self) -> None:
    """Prepares each dataset's splits (tfds) now, before any training or
    restore: a dataset or split that does not exist, or cannot be prepared
    here, is a `ConfigError` naming its key."""
    for name, (tfds_name, *splits) in self.settings.datasets.items():
      for split in splits:
        try:
          self._split(tfds_name, split)
        except (ValueError, KeyError, AssertionError, OSError,
                tf.errors.OpError) as e:
          # What tfds raises for an unknown name or split (ValueError,
          # KeyError), a manual download (AssertionError), files (OSError,
          # OpError): each names a setting.
          message = ' '.join(str(e).split())[:400]
          raise errors.ConfigError(
              f'config.fewshot.datasets.{name}: {tfds_name!r} split '
              f'{split!r} cannot be read here ({type(e).__name__}: '
              f'{message}); prepare it with tfds under fewshot.data_dir, or '
              'fix the name.') from None

  def _features(self, variables, batch):
    """`[B, ...]` inputs -> (`[B, D]` pre-logits, labels, mask), gathered."""
    _, state = self.model.apply(variables, batch['inputs'], train=False,
                                mutable=['intermediates'])
    sown = state.get('intermediates', {}).get('representation')
    if sown is None:
      raise ValueError(f'{type(self.model).__name__} sows no '
                       "'intermediates/representation' (models.common."
                       'classifier_head does).')
    return sown[0], batch['label'], batch['batch_mask']

  def _split(self, tfds_name: str, split: str):
    """This process's share of a split, preprocessed (the pipeline built
    once)."""
    key = (tfds_name, split)
    if key not in self._splits:
      self._splits[key] = self._build_split(tfds_name, split)
    return self._splits[key]

  def _build_split(self, tfds_name: str, split: str):
    # The builder, prepared once even when parallel runs race to prepare it.
    builder = input_pipeline._tfds_builder(  # pylint: disable=protected-access
        tfds_name, DataConfig(data_dir=self.settings.data_dir))
    input_key, label_key = builder.info.supervised_keys
    self._num_classes[tfds_name] = builder.info.features[label_key].num_classes
    pp = DataConfig(image_size=self.image_size,
                    eval_crop_fraction=self.settings.crop_fraction)

    def preprocess(example):
      image = example[input_key]
      if image.shape[-1] == 1:  # Grey images.
        image = tf.image.grayscale_to_rgb(image)
      return {'inputs': image_preprocessing.preprocess_image(image, pp, None),
              'label': tf.cast(example[label_key], tf.int32)}

    ds = builder.as_dataset(split=tfds.split_for_jax_process(split),
                            shuffle_files=False)
    # Not cached: a few-shot pool can be large (65,000 ImageNet images), and
    # it is read once per evaluation.
    return ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)

  def features(self, variables: Any, tfds_name: str,
               split: str) -> Tuple[np.ndarray, np.ndarray]:
    """(`[N, D]` pre-logits, `[N]` labels) of every example of a split."""
    batch_sharding = sharding.batch_sharding(self.mesh)
    size = batching.padded_eval_batch_size(self.settings.batch_size,
                                           'fewshot.batch_size')
    feats, labels = [], []
    for batch in batching.in_lockstep(
        batching.padded(self._split(tfds_name, split), size)):
      x, y, mask = jax.device_get(self._feature_fn(
          variables, sharding.global_batch(batch, batch_sharding)))
      keep = np.asarray(mask) > 0
      feats.append(np.asarray(x)[keep])
      labels.append(np.asarray(y)[keep])
    return np.concatenate(feats), np.concatenate(labels)

  def run(self, variables: Any) -> Tuple[Metrics, Dict[str, Any]]:
    """(metrics, each seed's accuracies per dataset and shots).

    `variables`: `{'params': ...}` and the model state, if any
    (`train_steps.model_variables`).
    """
    s = self.settings
    metrics: Metrics = {}
    per_seed: Dict[str, Any] = {}
    for name, (tfds_name, train_split, test_split) in s.datasets.items():
      train = self.features(variables, tfds_name, train_split)
      check_pool(train[1], self._num_classes[tfds_name], max(s.shots),
                 f'{name} ({tfds_name!r}, {train_split!r})')
      test = self.features(variables, tfds_name, test_split)
      accuracies = seed_accuracies(train, test, self._num_classes[tfds_name],
                                   s.shots, s.num_seeds, s.l2_reg)
      per_seed[name] = {str(k): v for k, v in accuracies.items()}
      for k, values in accuracies.items():
        metrics[f'{name}_{k}shot'] = float(np.mean(values))
    for k in s.shots:
      metrics[f'avg_{k}shot'] = float(np.mean(
          [metrics[f'{name}_{k}shot'] for name in s.datasets]))
    return metrics, per_seed


# ------------------------------------------------------------ standalone


def define_flags() -> None:
  """The command-line flags (defined only when run as the entry point)."""
  config_flags.DEFINE_config_file('config', None, 'Config file.',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'The training run to evaluate.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        step: Optional[int] = None) -> Dict[str, Any]:
  """Few-shot accuracies of a checkpoint of `workdir`; writes and returns
  `WORKDIR/fewshot.json`.

  Only the checkpoint's parameters and model state are read
  (`checkpoint.restore_variables`), onto the shardings the config's mesh
  gives them; the model's input shape and classes come from the config
  (`summary.example_input_shape`), so no pre-training data is read.
  """
  errors.require_workdir(workdir, 'fewshot')
  config = schema.complete(config)
  if not enabled(config):
    raise errors.ConfigError('config.fewshot.datasets is not set: no '
                             'dataset to evaluate on.')
  FewshotConfig.from_config(config)  # Bad settings stop here.
  step = checkpoint.step_to_read(workdir, step)
  input_shape = summary.example_input_shape(config)
  model = build_model(config, summary.example_num_classes(config))
  mesh = sharding.make_mesh(config)
  evaluator = FewShotEvaluator(config, model, mesh, input_shape)
  target, _ = train_steps.abstract_variables(config, model, input_shape,
                                             mesh)
  variables = checkpoint.restore_variables(workdir, step, target)
  logging.info('Few-shot evaluation of step %d on %s.', step,
               sorted(evaluator.settings.datasets))
  metrics, per_seed = evaluator.run(variables)
  s = evaluator.settings
  results = {'step': step, **metrics, 'per_seed': per_seed,
             'shots': list(s.shots), 'num_seeds': s.num_seeds,
             'l2_reg': s.l2_reg,
             'datasets': {n: list(e) for n, e in s.datasets.items()}}
  logging.info('%s', metrics)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'fewshot.json'), 'w') as f:
      json.dump(results, f, indent=1)
  return results


def main(argv) -> None:
  del argv
  runtime.initialize_runtime()
  if not flags.FLAGS.workdir:
    raise app.UsageError('--workdir is required.')
  errors.exit_on_known_fault(evaluate_checkpoint, flags.FLAGS.config,
                             flags.FLAGS.workdir, flags.FLAGS.step)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  errors.run(main)
