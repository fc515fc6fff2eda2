"""Losses and metrics of the two task heads (`config.model_name`).

'token_learner_classification' or 'vivit_classification': softmax
cross-entropy; 'accuracy', and 'accuracy_top_5' where there are more than 5
classes. 'token_learner_multilabel_classification' or
'vivit_multilabel_classification': sigmoid cross-entropy summed over classes
(JFT-style); 'prec@1' and the mean average precision. The names are the
reference's (scenic's ViViT and multi-label classification metrics).
`label_smoothing` smooths the targets of either head as the reference's
`apply_label_smoothing`: `(1 - s) * y + s / num_classes`.
Eval metrics are sums over examples weighted by `batch_mask`, so padding never
counts; `finalize` turns the sums into means.
"""

from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

# `config.model_name` -> whether its head is multi-label (sigmoid).
MODEL_NAMES = {
    'token_learner_classification': False,
    'token_learner_multilabel_classification': True,
    'vivit_classification': False,
    'vivit_multilabel_classification': True,
    'x2plus1d_classification': False,
    'x2plus1d_multilabel_classification': True,
}
TOP_5 = 'accuracy_top_5'


def is_multilabel(model_name: str) -> bool:
  if model_name not in MODEL_NAMES:
    raise ValueError(f'config.model_name must be one of {tuple(MODEL_NAMES)}, '
                     f'got {model_name!r}.')
  return MODEL_NAMES[model_name]


def per_example_loss(logits: jax.Array, labels: jax.Array, multilabel: bool,
                     label_smoothing: Optional[float] = None) -> jax.Array:
  """`[B]` losses; labels are one-hot or multi-hot `[B, C]`."""
  logits = logits.astype(jnp.float32)
  if label_smoothing:
    labels = optax.smooth_labels(labels, label_smoothing)
  if multilabel:
    return optax.sigmoid_binary_cross_entropy(logits, labels).sum(-1)
  return optax.softmax_cross_entropy(logits, labels)


def metric_sums(logits: jax.Array, labels: jax.Array, mask: jax.Array,
                multilabel: bool) -> Dict[str, jax.Array]:
  """Masked sums of the per-example metrics (and the example count)."""
  top1 = jnp.argmax(logits, -1)
  hit = jnp.take_along_axis(labels, top1[:, None], -1)[:, 0] > 0
  sums = {'loss': per_example_loss(logits, labels, multilabel),
          'prec@1' if multilabel else 'accuracy': hit.astype(jnp.float32)}
  if not multilabel and logits.shape[-1] > 5:
    top5 = jax.lax.top_k(logits, 5)[1]
    true = jnp.argmax(labels, -1)
    sums[TOP_5] = jnp.any(top5 == true[:, None], -1).astype(
        jnp.float32)
  sums = {k: jnp.sum(v * mask) for k, v in sums.items()}
  sums['num_examples'] = jnp.sum(mask)
  return sums


def class_average_precision(scores: np.ndarray,
                            labels: np.ndarray) -> np.ndarray:
  """`[C]` average precision of each class over the `[N, C]` examples; NaN
  for a class with no positive.

  The area under the precision-recall steps, one step per distinct score
  (tied scores are one threshold): sum over thresholds of (recall gain) x
  precision, as scikit-learn's `average_precision_score` computes it.
  """
  aps = np.full(labels.shape[1], np.nan)
  for c in range(labels.shape[1]):
    positives = labels[:, c] > 0
    if not positives.any():
      continue
    order = np.argsort(-scores[:, c], kind='stable')
    ranked = scores[order, c]
    hits = np.cumsum(positives[order])  # [N] positives at or above each rank
    # The last rank of each distinct score.
    ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    precision = hits[ends] / (ends + 1)
    recall = hits[ends] / hits[-1]
    aps[c] = float(np.sum(np.diff(recall, prepend=0.0) * precision))
  return aps


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
  """Mean over the classes with a positive of each class's average precision
  (`class_average_precision`), as the Charades classification evaluation
  skips classes absent from the split; NaN if no class has one."""
  aps = class_average_precision(scores, labels)
  return float(np.nanmean(aps)) if np.isfinite(aps).any() else float('nan')


def finalize(sums: Dict[str, float]) -> Dict[str, float]:
  count = sums['num_examples']
  return {k: float(v) / count for k, v in sums.items() if k != 'num_examples'}
