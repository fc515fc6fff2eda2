"""Metrics over a whole eval split, each example counted once.

`evaluate_batches` runs a jit-compiled eval step (`train_steps.make_eval_step`)
over padded, masked batches of every process in lockstep and finalizes the
summed metrics (`metrics.finalize`); the trainer uses it periodically and
`tokenlearner_jax.evaluate` for the test protocol.
"""

from typing import Any, Callable, Dict, Iterable, List

import jax
from jax.experimental import multihost_utils
import numpy as np

from tokenlearner_jax import metrics as metrics_lib
from tokenlearner_jax import sharding
from tokenlearner_jax.data import batching


def _gathered(x: np.ndarray, tiled: bool = True) -> np.ndarray:
  """`x` of every process (this process's `x` in a 1-process job)."""
  if jax.process_count() == 1:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=tiled))


def evaluate_batches(variables: Any,
                     batches: Iterable[Dict[str, np.ndarray]],
                     eval_step: Callable, batch_sharding: Any,
                     multilabel: bool,
                     per_class: bool = False) -> Dict[str, Any]:
  """Metrics over all `batches` of every process (each example once).

  Args:
    variables: The model's variables (`train_steps.model_variables`), on
      the shardings `eval_step` takes.
    batches: This process's padded eval batches (`inputs`, `label`,
      `batch_mask`).
    eval_step: `(variables, global batch) -> (metric sums, logits)`.
    batch_sharding: Where a global batch goes.
    multilabel: Add the mean average precision over the whole split (the
      logits and labels of every process are gathered).
    per_class: With `multilabel`, also each class's average precision,
      `average_precision_per_class` (a list by class id; None for a class
      with no positive in the split, which the mean skips), and
      `num_classes_scored`.
  """
  totals: Dict[str, float] = {}
  scores: List[np.ndarray] = []
  labels: List[np.ndarray] = []
  for batch in batching.in_lockstep(batches):
    sums, logits = eval_step(variables,
                             sharding.global_batch(batch, batch_sharding))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + float(v)
    if multilabel:
      logits = _gathered(logits, tiled=False)  # A global array: all of it.
      label = _gathered(batch['label'])
      keep = _gathered(batch['batch_mask']) > 0
      scores.append(logits[keep])
      labels.append(label[keep])
  results = metrics_lib.finalize(totals)
  results['num_examples'] = int(totals['num_examples'])
  if multilabel:
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    results['mean_average_precision'] = metrics_lib.average_precision(
        scores, labels)
    if per_class:
      aps = metrics_lib.class_average_precision(scores, labels)
      results['num_classes_scored'] = int(np.isfinite(aps).sum())
      results['average_precision_per_class'] = [
          float(ap) if np.isfinite(ap) else None for ap in aps]
  return results
