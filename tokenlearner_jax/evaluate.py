r"""Evaluates a trained checkpoint with the test protocol.

  python -m tokenlearner_jax.evaluate --config=configs/vivit_k400.py \
      --workdir=/path/to/run [--split=test] [--step=N] [--out=PATH]

Restores the parameters and the model state (BatchNorm's statistics, if the
model has any; no optimizer) of the latest (or `--step`) checkpoint under
`WORKDIR/checkpoints`, evaluates `--split` (default:
`dataset_configs.test_split`, else 'test') with the test protocol -- for
videos `num_test_clips` clips x 3 spatial crops (`do_three_spatial_crops`) per
video with the logits averaged per video (`dataset_configs.test_pooling=
'max'`: each class's max over the views), each video counted exactly once; for
images one view -- and writes `WORKDIR/eval_<split>.json`: for a multi-label
head `mean_average_precision` (over the classes with a positive in the
split), `prec@1` and `average_precision_per_class` (by class id, null where a
class has no positive); `--out` writes it elsewhere. The config may differ from
the run's where the parameters allow: e.g. ToMe or ATS applied to a model
trained without them (`--config.model.tokenizer.token_reduction=tome
--config.model.tokenizer.tokenlearner_loc=0
--config.model.tokenizer.tome_r=8`; docs/models.md). Only the eval side of the
data pipeline is built (the number of classes, the input shape and the test
split): the train split need not exist. A `--workdir` that does not exist
(a mistyped path) stops it at once with one line naming it, and nothing is
created.
"""

import json
import os
from typing import Dict, Optional

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from tokenlearner_jax import checkpoint
from tokenlearner_jax import errors
from tokenlearner_jax import evaluation
from tokenlearner_jax import flops
from tokenlearner_jax import runtime
from tokenlearner_jax import sharding
from tokenlearner_jax import train_steps
from tokenlearner_jax.configs import schema
from tokenlearner_jax.configs.data_config import DataConfig
from tokenlearner_jax.data import input_pipeline


def define_flags() -> None:
  """The command-line flags (defined only when run as the entry point)."""
  config_flags.DEFINE_config_file('config', None, 'Config file.',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'The training run to evaluate.')
  flags.DEFINE_string('split', None, 'Split to evaluate.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_string('out', None, 'Where the metrics JSON goes (default: '
                      'WORKDIR/eval_<split>.json).')


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        split: Optional[str] = None,
                        step: Optional[int] = None,
                        out: Optional[str] = None) -> Dict[str, float]:
  """Evaluates a checkpoint of `workdir`; writes (to `out`, default
  `workdir/eval_<split>.json`) and returns the metrics.

  Only the checkpoint's parameters and model state are read
  (`checkpoint.restore_variables`), onto the shardings the config's mesh
  gives them (the step program's, without the optimizer state).
  `config.model_name` picks the metrics (`metrics.is_multilabel`: mAP for the
  multi-label head).
  """
  errors.require_workdir(workdir, 'evaluate')
  config = schema.complete(config)
  dc = DataConfig.from_config(config)
  split = split or dc.test_split
  step = checkpoint.step_to_read(workdir, step)
  data = input_pipeline.get_data(config, train=False)
  program = train_steps.build_program(config, sharding.make_mesh(config),
                                      data.input_shape, data.num_classes,
                                      total_steps=1)
  variables = checkpoint.restore_variables(workdir, step,
                                           program.abstract_variables())
  batch_sharding = program.batch_sharding
  eval_step = program.make_eval_step(multiview=True, pooling=dc.test_pooling)
  logging.info('Evaluating step %d on %r with %d views per example.', step,
               split, data.num_test_views)
  results = evaluation.evaluate_batches(variables, data.test_batches(split),
                                        eval_step, batch_sharding,
                                        program.multilabel, per_class=True)
  results = {'step': step, 'split': split,
             'views_per_example': data.num_test_views,
             'view_pooling': dc.test_pooling, **results,
             'gmacs_per_example': flops.gmacs(
                 config, data.test_input_shape or data.input_shape,
                 data.num_classes)}
  if data.skipped is not None:  # skip_corrupt_examples: what it skipped.
    results['skipped_examples'] = data.skipped.last_pass
  logging.info('%s', results)
  if jax.process_index() == 0:
    with open(out or os.path.join(workdir, f'eval_{split}.json'), 'w') as f:
      json.dump(results, f, indent=1)
  return results


def main(argv) -> None:
  del argv
  runtime.initialize_runtime()
  if not flags.FLAGS.workdir:
    raise app.UsageError('--workdir is required.')
  errors.exit_on_known_fault(evaluate_checkpoint, flags.FLAGS.config,
                             flags.FLAGS.workdir, flags.FLAGS.split,
                             flags.FLAGS.step, flags.FLAGS.out)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  errors.run(main)
