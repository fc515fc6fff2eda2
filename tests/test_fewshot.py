"""The few-shot linear evaluator: its closed form against independent
solutions, its few-shot sets, and its runs during training and standalone."""

import copy
import json
import os

from absl.testing import absltest
import flax.linen as nn
import jax
import numpy as np
import pytest
from sklearn import linear_model
import tensorflow as tf

from tests import testing
from tests.testing import config_for
from tests.testing import demo_config
from tests.testing import final_metrics
from tests.testing import read_jsonl
from tokenlearner_jax import checkpoint
from tokenlearner_jax import errors
from tokenlearner_jax import fewshot
from tokenlearner_jax import sharding
from tokenlearner_jax import train
from tokenlearner_jax.models import build_model


def features_and_labels(n, d, num_classes, seed):
  """Correlated, shifted features `[n, d]` whose mean depends on the class."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % num_classes
  means = rng.normal(size=(num_classes, d)) * 2.0
  mix = rng.normal(size=(d, d))
  x = (rng.normal(size=(n, d)) + means[labels]) @ mix + 5.0  # [n, d]
  return x.astype(np.float32), labels


class ClosedFormTest(absltest.TestCase):

  def check_against_independent_solutions(self, n, d, l2_reg):
    num_classes = 4
    x, labels = features_and_labels(n, d, num_classes, seed=n + d)
    train_x, _ = fewshot.whiten(x, x[:1])
    y = fewshot.signed_targets(labels, num_classes)
    w = fewshot.ridge_weights(train_x, y, l2_reg)
    self.assertEqual(w.shape, (d + 1, num_classes))
    # scikit-learn's Ridge on the same features, no intercept of its own
    # (the bias feature is one of them).
    ridge = linear_model.Ridge(alpha=l2_reg, fit_intercept=False,
                               solver='svd').fit(train_x, y)
    np.testing.assert_allclose(w, ridge.coef_.T, rtol=0, atol=1e-6)
    # Least squares of the stacked system [X; sqrt(l2) I] W = [Y; 0].
    stacked = np.concatenate([train_x, np.sqrt(l2_reg) * np.eye(d + 1)])
    targets = np.concatenate([y, np.zeros((d + 1, num_classes))])
    lstsq = np.linalg.lstsq(stacked, targets, rcond=None)[0]
    np.testing.assert_allclose(w, lstsq, rtol=0, atol=1e-6)
    return w

  def test_the_dxd_form_when_examples_outnumber_features(self):
    self.check_against_independent_solutions(n=60, d=8, l2_reg=2.0**10)

  def test_the_nxn_form_when_features_outnumber_examples(self):
    self.check_against_independent_solutions(n=12, d=40, l2_reg=2.0**10)

  def test_both_gram_forms_agree(self):
    x, labels = features_and_labels(20, 19, 3, seed=0)
    train_x, _ = fewshot.whiten(x, x[:1])  # [20, 20]: N == D + 1.
    y = fewshot.signed_targets(labels, 3)
    gram_d = np.linalg.solve(train_x.T @ train_x + 3.0 * np.eye(20),
                             train_x.T @ y)
    gram_n = train_x.T @ np.linalg.solve(train_x @ train_x.T + 3.0 * np.eye(20),
                                         y)
    np.testing.assert_allclose(fewshot.ridge_weights(train_x, y, 3.0), gram_d,
                               atol=1e-9)
    np.testing.assert_allclose(gram_d, gram_n, atol=1e-6)
    # One example fewer: the N x N form; it is still the D x D solution.
    w = fewshot.ridge_weights(train_x[:19], y[:19], 3.0)
    expected = np.linalg.solve(train_x[:19].T @ train_x[:19] + 3.0 *
                               np.eye(20), train_x[:19].T @ y[:19])
    np.testing.assert_allclose(w, expected, atol=1e-6)

  def test_whitening_uses_the_few_shot_set_and_appends_the_bias(self):
    x, _ = features_and_labels(30, 5, 3, seed=1)
    test = x[:7] * 2.0
    train_x, test_x = fewshot.whiten(x, test)
    self.assertEqual(train_x.dtype, np.float64)
    np.testing.assert_allclose(train_x[:, :5].mean(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(train_x[:, :5].std(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(train_x[:, 5], fewshot.BIAS_CONSTANT)
    np.testing.assert_array_equal(test_x[:, 5], fewshot.BIAS_CONSTANT)
    mean, std = x.astype(np.float64).mean(0), x.astype(np.float64).std(0)
    np.testing.assert_allclose(test_x[:, :5], (test - mean) / (std + 1e-5))

  def test_targets_are_plus_and_minus_one(self):
    np.testing.assert_array_equal(
        fewshot.signed_targets(np.array([2, 0]), 3),
        [[-1, -1, 1], [1, -1, -1]])

  def test_separable_classes_are_classified(self):
    x, labels = features_and_labels(400, 6, 4, seed=3)
    accuracy = fewshot.linear_accuracy(x[:200], labels[:200], x[200:],
                                       labels[200:], 4, 2.0**10)
    self.assertGreater(accuracy, 0.9)


class SelectShotsTest(absltest.TestCase):

  def test_the_first_shots_of_each_class_in_the_seeds_permutation(self):
    labels = np.random.default_rng(0).integers(0, 5, size=300)
    for seed in (0, 1, 7):
      order = np.random.default_rng(seed).permutation(len(labels))
      for shots in (1, 5, 10):
        idx = fewshot.select_shots(labels, 5, shots, seed)
        expected = [i for c in range(5)
                    for i in [j for j in order if labels[j] == c][:shots]]
        np.testing.assert_array_equal(idx, expected)
        np.testing.assert_array_equal(np.bincount(labels[idx]), [shots] * 5)

  def test_deterministic_per_seed_nested_over_shots_and_seeds_differ(self):
    labels = np.arange(200) % 4
    first = fewshot.select_shots(labels, 4, 5, seed=3)
    np.testing.assert_array_equal(first,
                                  fewshot.select_shots(labels, 4, 5, seed=3))
    one_shot = fewshot.select_shots(labels, 4, 1, seed=3)
    self.assertContainsSubset(set(one_shot), set(first))
    self.assertNotEqual(set(first),
                        set(fewshot.select_shots(labels, 4, 5, seed=4)))

  def test_a_class_with_fewer_examples_gives_what_it_has(self):
    labels = np.array([0, 0, 0, 1, 0])
    idx = fewshot.select_shots(labels, 2, 3, seed=0)
    self.assertLen(idx, 4)
    self.assertEqual(list(labels[idx]), [0, 0, 0, 1])


class RepresentationTest(absltest.TestCase):

  def test_the_head_input_is_sown_after_the_tanh_pre_logits_layer(self):
    config = config_for('jft_pretrain')  # representation_size 32.
    model = build_model(config, num_classes=10)
    x = np.random.default_rng(0).normal(size=(3, 32, 32, 3))
    params = nn.unbox(model.init(jax.random.key(0), x, train=False)['params'])
    params = jax.tree_util.tree_map(  # A head that is not zero.
        lambda p: p + 0.1 * np.ones_like(p), params)
    logits, state = model.apply({'params': params}, x, train=False,
                                mutable=['intermediates'])
    (features,) = state['intermediates']['representation']
    self.assertEqual(features.shape, (3, 32))
    self.assertLessEqual(float(np.abs(features).max()), 1.0)  # After tanh.
    head = params['output_projection']
    np.testing.assert_allclose(features @ head['kernel'] + head['bias'],
                               logits, rtol=1e-5, atol=1e-5)


class RunsTest(absltest.TestCase):
  """One tiny multi_digits run with the few-shot hook at every step, then
  the standalone evaluation on its checkpoint (its command line: the
  entry-point test in tests/integration/)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.config, cls.workdir = testing.shared_run('demo_multi_digits')
    cls.final = final_metrics(cls.workdir)

  def test_the_hook_records_each_step_and_the_final_metrics(self):
    rows = [r for r in read_jsonl(self.workdir) if r['kind'] == 'fewshot']
    self.assertEqual([r['step'] for r in rows], [1, 2])
    for row in rows:
      self.assertSameElements(row, ['step', 'kind', 'digits_1shot',
                                    'digits_5shot', 'avg_1shot',
                                    'avg_5shot'])
      self.assertBetween(row['digits_5shot'], 0.0, 1.0)
    for key in ('digits_1shot', 'digits_5shot'):
      self.assertEqual(self.final[f'fewshot_{key}'], rows[-1][key])
    tags = set()
    for name in os.listdir(self.workdir):
      if 'tfevents' in name:
        for event in tf.compat.v1.train.summary_iterator(
            os.path.join(self.workdir, name)):
          tags.update(value.tag for value in event.summary.value)
    self.assertContainsSubset({'fewshot_digits_1shot', 'fewshot_digits_5shot',
                               'fewshot_avg_5shot'}, tags)

  def test_standalone_writes_fewshot_json_matching_the_hook(self):
    _, workdir = testing.copied_run('demo_multi_digits',
                                    self.create_tempdir().full_path)
    returned = fewshot.evaluate_checkpoint(self.config, workdir)
    with open(os.path.join(workdir, 'fewshot.json')) as f:
      results = json.load(f)
    self.assertEqual(results, json.loads(json.dumps(returned)))
    self.assertEqual(results['step'], 2)
    self.assertEqual(results['shots'], [1, 5])
    self.assertEqual(results['l2_reg'], 2.0**10)
    for shots in ('1', '5'):
      seeds = results['per_seed']['digits'][shots]
      self.assertLen(seeds, 2)
      self.assertAlmostEqual(results[f'digits_{shots}shot'], np.mean(seeds))
      # The same checkpoint, features and few-shot sets as the hook's last.
      self.assertAlmostEqual(results[f'digits_{shots}shot'],
                             self.final[f'fewshot_digits_{shots}shot'])

  def test_a_dataset_or_split_not_there_is_named_before_anything_runs(self):
    for entry, named in ((('fewshot_digitz', 'train', 'test'),
                          "'fewshot_digitz' split 'train'"),
                         (('fewshot_digits/small', 'train', 'tset'),
                          "'fewshot_digits/small' split 'tset'")):
      config = copy.deepcopy(self.config)
      config.fewshot.datasets = {'digits': entry}
      with self.assertRaisesRegex(errors.ConfigError,
                                  f'config.fewshot.datasets.digits: {named} '
                                  'cannot be read here'):
        fewshot.FewShotEvaluator(config, None, sharding.make_mesh(config),
                                 (32, 32, 3))

  def test_more_shots_than_a_class_of_the_pool_has_is_named(self):
    config = copy.deepcopy(self.config)
    config.fewshot.shots = (1, 500)
    with self.assertRaisesRegex(
        errors.ConfigError, r'config.fewshot.shots asks for 500 examples per '
        r"class but the pool of digits \('fewshot_digits/small', 'train'\) "
        'has [0-9]+ of class 0'):
      fewshot.evaluate_checkpoint(config, self.workdir)

  @pytest.mark.e2e
  def test_a_failing_evaluation_during_training_loses_no_checkpoint(self):
    config = copy.deepcopy(self.config)
    config.fewshot.shots = (1, 500)  # Fails at step 1's few-shot evaluation.
    workdir = self.create_tempdir().full_path
    with self.assertRaisesRegex(errors.ConfigError, 'asks for 500'):
      train.train_and_evaluate(config, workdir)
    self.assertEqual(checkpoint.latest_step(workdir), 1)

  def test_standalone_refuses_a_config_without_fewshot(self):
    config = demo_config('demo_multi_digits')
    del config['fewshot']
    with self.assertRaisesRegex(errors.ConfigError, 'fewshot.datasets'):
      fewshot.evaluate_checkpoint(config, self.workdir)


if __name__ == '__main__':
  absltest.main()
