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


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
  """Mean over classes with a positive of each class's average precision."""
  aps = []
  for c in range(labels.shape[1]):
    positives = labels[:, c] > 0
    if not positives.any():
      continue
    order = np.argsort(-scores[:, c], kind='stable')
    hits = positives[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    aps.append(float(np.sum(precision * hits) / hits.sum()))
  return float(np.mean(aps))


def finalize(sums: Dict[str, float]) -> Dict[str, float]:
  count = sums['num_examples']
  return {k: float(v) / count for k, v in sums.items() if k != 'num_examples'}
