"""Hand-checked metrics of both heads."""

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np
from sklearn import metrics as sk_metrics

from tokenlearner_jax import metrics

LOGITS = np.array([[2., 1., 0.], [0., 3., 1.], [1., 0., 2.], [9., 9., 9.]])
MULTI_HOT = np.array([[1., 0., 1.], [0., 0., 1.], [0., 1., 0.], [1., 1., 1.]])
MASK = np.array([1., 1., 1., 0.])  # The last example is padding.


class MultilabelTest(absltest.TestCase):

  def test_precision_at_1_and_loss(self):
    sums = metrics.metric_sums(jnp.asarray(LOGITS), jnp.asarray(MULTI_HOT),
                               jnp.asarray(MASK), multilabel=True)
    result = metrics.finalize({k: float(v) for k, v in sums.items()})
    # Top-1 classes 0, 1, 2: only the first is a positive.
    self.assertAlmostEqual(result['prec@1'], 1 / 3, places=6)
    x, z = LOGITS[:3], MULTI_HOT[:3]
    loss = np.mean(np.sum(np.maximum(x, 0) - x * z + np.log1p(np.exp(-abs(x))),
                          -1))
    self.assertAlmostEqual(result['loss'], loss, places=5)
    self.assertEqual(float(sums['num_examples']), 3.0)

  def test_mean_average_precision(self):
    # Class 0: AP 1; class 1: its positive ranks 3rd, AP 1/3; class 2:
    # positives rank 2nd and 3rd, AP (1/2 + 2/3) / 2 = 7/12.
    mean_ap = metrics.average_precision(LOGITS[:3], MULTI_HOT[:3])
    self.assertAlmostEqual(mean_ap, (1 + 1 / 3 + 7 / 12) / 3)
    self.assertAlmostEqual(mean_ap, sk_metrics.average_precision_score(
        MULTI_HOT[:3], LOGITS[:3], average='macro'))

  def test_class_average_precision_is_scikit_learns_with_ties(self):
    rng = np.random.default_rng(0)
    # Scores rounded to tenths: many ties; class 3 has no positive.
    scores = np.round(rng.normal(size=(60, 5)), 1)
    labels = (rng.uniform(size=(60, 5)) < 0.3).astype(np.float32)
    labels[:, 3] = 0
    aps = metrics.class_average_precision(scores, labels)
    self.assertTrue(np.isnan(aps[3]))
    for c in (0, 1, 2, 4):
      self.assertAlmostEqual(aps[c], sk_metrics.average_precision_score(
          labels[:, c], scores[:, c]), places=12)
    # The mean skips the class without a positive.
    self.assertAlmostEqual(metrics.average_precision(scores, labels),
                           np.mean(aps[[0, 1, 2, 4]]), places=12)

  def test_label_smoothing_is_the_references_on_sigmoid_targets(self):
    # scenic's apply_label_smoothing: y * (1 - s) + s / num_classes, then
    # the sigmoid cross-entropy summed over classes.
    loss = metrics.per_example_loss(jnp.asarray(LOGITS), jnp.asarray(MULTI_HOT),
                                    True, 0.3)
    x, z = LOGITS, MULTI_HOT * 0.7 + 0.1
    log_sigmoid = lambda v: -np.log1p(np.exp(-v))
    expected = -np.sum(z * log_sigmoid(x) + (1 - z) * log_sigmoid(-x), -1)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


class ModelNameTest(absltest.TestCase):

  def test_reference_model_names(self):
    self.assertFalse(metrics.is_multilabel('token_learner_classification'))
    self.assertFalse(metrics.is_multilabel('vivit_classification'))
    self.assertTrue(
        metrics.is_multilabel('token_learner_multilabel_classification'))
    self.assertTrue(metrics.is_multilabel('vivit_multilabel_classification'))

  def test_unknown_model_name(self):
    with self.assertRaisesRegex(ValueError, 'config.model_name'):
      metrics.is_multilabel('vit_classification')


class ClassificationTest(absltest.TestCase):

  def test_accuracy_top5_and_smoothing(self):
    logits = jnp.asarray([[6., 5., 4., 3., 2., 1.], [6., 5., 4., 3., 2., 1.]])
    labels = jnp.eye(6)[jnp.asarray([0, 5])]
    sums = metrics.metric_sums(logits, labels, jnp.ones(2), multilabel=False)
    result = metrics.finalize({k: float(v) for k, v in sums.items()})
    self.assertEqual(result['accuracy'], 0.5)
    # The reference's name; class 5 ranks 6th.
    self.assertEqual(result['accuracy_top_5'], 0.5)
    plain = metrics.per_example_loss(logits, labels, False)
    smooth = metrics.per_example_loss(logits, labels, False, 0.1)
    log_p = logits - jnp.log(jnp.sum(jnp.exp(logits), -1, keepdims=True))
    expected = -jnp.sum((0.9 * labels + 0.1 / 6) * log_p, -1)
    np.testing.assert_allclose(smooth, expected, rtol=1e-6)
    np.testing.assert_allclose(plain, -jnp.sum(labels * log_p, -1), rtol=1e-6)

  def test_no_top5_with_five_classes(self):
    sums = metrics.metric_sums(jnp.zeros((2, 5)), jnp.eye(5)[:2], jnp.ones(2),
                               multilabel=False)
    self.assertNotIn('accuracy_top_5', sums)


if __name__ == '__main__':
  absltest.main()
