r"""Evaluates a trained checkpoint with the test protocol.

  python -m tokenlearner_jax.evaluate --config=configs/vivit_k400.py \
      --workdir=/path/to/run [--split=test] [--step=N]

Restores the latest (or `--step`) checkpoint under `WORKDIR/checkpoints`,
evaluates `--split` (default: `dataset_configs.test_split`, else 'test') with
the test protocol -- for videos `num_test_clips` clips x 3 spatial crops
(`do_three_spatial_crops`) per video with the logits averaged per video, each
video counted exactly once; for images one view -- and writes
`WORKDIR/eval_<split>.json`.
"""

import functools
import json
import os
from typing import Dict, Optional

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from tokenlearner_jax import metrics as metrics_lib
from tokenlearner_jax import optim
from tokenlearner_jax import sharding
from tokenlearner_jax import train
from tokenlearner_jax import train_steps
from tokenlearner_jax.data import input_pipeline
from tokenlearner_jax.models import build_model


def define_flags() -> None:
  """The command-line flags (defined only when run as the entry point)."""
  config_flags.DEFINE_config_file('config', None, 'Config file.',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'The training run to evaluate.')
  flags.DEFINE_string('split', None, 'Split to evaluate.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        split: Optional[str] = None,
                        step: Optional[int] = None) -> Dict[str, float]:
  """Evaluates a checkpoint of `workdir`; writes and returns the metrics."""
  split = split or config.dataset_configs.get('test_split') or 'test'
  multilabel = metrics_lib.is_multilabel(config.model_name)
  manager = train.checkpoint_manager(workdir, config)
  if manager.latest_step() is None:
    raise FileNotFoundError(f'--workdir: no checkpoint under '
                            f'{manager.directory}.')
  data = input_pipeline.get_data(config)
  model = build_model(config, data.num_classes)
  tx, _ = optim.make_optimizer(
      config, train.num_train_steps(config, data.num_train_examples))
  mesh = sharding.make_mesh(config)
  target, shardings = train_steps.create_train_state(
      config, model, tx, data.input_shape, mesh, abstract=True)
  state = train.restore(manager, target, shardings, step)
  batch_sharding = sharding.batch_sharding(mesh)
  p_eval_step = jax.jit(
      functools.partial(train_steps.eval_step, model=model,
                        multilabel=multilabel, multiview=True),
      in_shardings=(shardings.params, batch_sharding))
  logging.info('Evaluating step %d on %r with %d views per example.',
               int(state.step), split, data.num_test_views)
  results = train.evaluate(state.params, data.test_batches(split),
                           p_eval_step, batch_sharding, multilabel)
  results = {'step': int(state.step), 'split': split,
             'views_per_example': data.num_test_views, **results}
  logging.info('%s', results)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, f'eval_{split}.json'), 'w') as f:
      json.dump(results, f, indent=1)
  return results


def main(argv) -> None:
  del argv
  train.initialize_runtime()
  if not flags.FLAGS.workdir:
    raise app.UsageError('--workdir is required.')
  evaluate_checkpoint(flags.FLAGS.config, flags.FLAGS.workdir,
                      flags.FLAGS.split, flags.FLAGS.step)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main)
