"""tokenlearner_jax.configs.schema: every key is known, typos are errors.

The reference's config files (copied in tests/testdata/reference_configs/)
and ours pass `check_config`; a misspelt key stops `train_and_evaluate`,
`evaluate_checkpoint`, `visualize` and `summarize` before anything runs,
naming the closest known key; every key the package reads is in the table;
docs/config_keys.md is the table's rendering.
"""

import ast
import contextlib
import glob
import importlib.util
import io
import os
import re
import textwrap
from typing import Dict, Iterator, Optional, Set

from absl.testing import absltest
from absl.testing import parameterized
import ml_collections

from tests.testing import ROOT
from tests.testing import TYPO
from tests.testing import config_for
from tests.testing import model_only_config
from tests.testing import mu_config
from tests.testing import typo_config_file
from tokenlearner_jax import evaluate
from tokenlearner_jax import models
from tokenlearner_jax import summary
from tokenlearner_jax import train
from tokenlearner_jax import visualize
from tokenlearner_jax.configs import common
from tokenlearner_jax.configs import schema

CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py')))
config_keys = common.load_module(
    os.path.join(ROOT, 'scripts', 'config_keys.py'))
REFERENCE_DIR = os.path.join(ROOT, 'tests', 'testdata', 'reference_configs')
REFERENCE_CONFIGS = sorted(
    glob.glob(os.path.join(REFERENCE_DIR, '**', '*.py'), recursive=True))
def leaf_keys(node, prefix: str = '') -> Iterator[str]:
  """Every key path of `node` outside `model`, down to the table's leaves."""
  for name in node.keys():
    path = prefix + name
    yield path
    entry = schema.TABLE.get(path)
    if (entry is not None and entry.section and path != 'model' and
        isinstance(node[name], (dict, ml_collections.ConfigDict))):
      yield from leaf_keys(node[name], path + '.')


class CheckConfigTest(parameterized.TestCase):

  def test_a_typo_in_a_config_file_names_the_closest_key(self):
    path = typo_config_file(self.create_tempdir().full_path)
    config = common.load_config(path)
    config.lock()  # As the --config flag hands it over.
    with self.assertRaisesWithLiteralMatch(ValueError, TYPO):
      schema.check_config(config)

  def test_train_and_evaluate_stops_on_a_typo_before_anything_runs(self):
    config = common.load_config(
        typo_config_file(self.create_tempdir().full_path))
    workdir = self.create_tempdir().full_path
    with self.assertRaisesWithLiteralMatch(ValueError, TYPO):
      train.train_and_evaluate(config, workdir)
    self.assertEqual(os.listdir(workdir), [])  # No checkpoint manager yet.

  def test_every_entry_point_checks_the_config(self):
    config = common.load_config(
        typo_config_file(self.create_tempdir().full_path))
    workdir = self.create_tempdir().full_path
    for run in (lambda: evaluate.evaluate_checkpoint(config, workdir),
                lambda: visualize.visualize(config, workdir),
                lambda: summary.summarize(config)):
      with self.assertRaisesWithLiteralMatch(ValueError, TYPO):
        run()

  def test_a_key_in_the_wrong_section_names_where_it_belongs(self):
    config = config_for('demo_moving_digits')
    config.warmup_steps = 10
    with self.assertRaisesRegex(
        ValueError, r'config.warmup_steps is not a known config key; did you '
        r'mean config.lr_configs.warmup_steps\?'):
      schema.check_config(config)

  def test_a_model_typo_is_named_by_model_config(self):
    config = config_for('vivit_k400')
    config.model.tokenizer.num_tokenz = 4
    with self.assertRaisesRegex(ValueError, r'model.tokenizer.num_tokenz .*'
                                r'did you mean model.tokenizer.num_tokens\?'):
      schema.check_config(config)

  def test_free_form_values_are_leaves(self):
    config = config_for('vivit_k400')
    config.dataset_configs.tables = dict(any_split='x@1', other='y-*')
    config.dataset_configs.examples_per_subset = dict(any_split=3)
    config.init_from.model_config = ml_collections.ConfigDict(
        dict(model=dict(classifier='token', anything=1)))
    schema.check_config(config)

  @parameterized.named_parameters(
      ('checkpoint', 'checkpoint', False, 'always checkpoints'),
      ('write_summary', 'write_summary', False, 'always writes'),
      ('data_dtype_str', 'data_dtype_str', 'bfloat16', 'inputs are float32'),
      ('datset_configs', 'datset_configs', dict(num_frames=8),
       'keys belong in `dataset_configs`'),
      ('trainer_name', 'trainer_name', 'segmentation_trainer', 'one trainer'))
  def test_a_no_op_refuses_values_it_would_ignore(self, key, value, why):
    config = config_for('demo_moving_digits')
    config[key] = value
    with self.assertRaisesRegex(ValueError,
                                rf'config.{key}=.* is not supported .*{why}'):
      schema.check_config(config)

  def test_unsupported_augmentations_are_accepted_off_only(self):
    config = config_for('vivit_k400')
    config.dataset_configs.augmentation_params.do_rand_augment = False
    schema.check_config(config)
    config.dataset_configs.augmentation_params.do_rand_augment = True
    with self.assertRaisesRegex(ValueError, 'RandAugment is not implemented'):
      schema.check_config(config)

  def test_an_unset_placeholder_is_accepted(self):
    config = config_for('demo_moving_digits')
    config.checkpoint = ml_collections.config_dict.placeholder(bool)
    schema.check_config(config)

  @parameterized.parameters(*[(os.path.basename(path), arg)
                              for path in CONFIGS
                              for arg in (None, 'runlocal')])
  def test_config_file_passes(self, name, arg):
    schema.check_config(
        common.load_config(os.path.join(ROOT, 'configs', name), arg))

  def test_the_test_helpers_configs_pass(self):
    for config in (mu_config(), mu_config('dynamic', tokenlearner_loc=1),
                   model_only_config(), model_only_config('video', patch=2)):
      schema.check_config(config)


class ReferenceConfigsTest(parameterized.TestCase):

  def test_the_copies_are_all_there_with_their_license(self):
    names = [os.path.relpath(p, REFERENCE_DIR) for p in REFERENCE_CONFIGS]
    self.assertEqual(names, [
        'token_learner/im1k_token_learner_config.py',
        'vivit/kinetics400/vivit_base_factorised_encoder.py',
        'vivit/kinetics400/vivit_base_k400.py',
        'vivit/kinetics400/vivit_large_factorised_encoder.py',
        'vivit/kinetics600/vivit_large_factorised_encoder.py'])
    for path in REFERENCE_CONFIGS:
      with open(path) as f:
        text = f.read()
      self.assertTrue(text.startswith('# Copyright 2026 The Scenic Authors.'))
      self.assertIn('Licensed under the Apache License, Version 2.0', text)

  @parameterized.parameters(*[os.path.relpath(p, REFERENCE_DIR)
                              for p in REFERENCE_CONFIGS])
  def test_reference_config_passes_unchanged(self, name):
    schema.check_config(
        common.load_config(os.path.join(REFERENCE_DIR, name)))

  def test_reference_flags_are_the_keys_the_reference_sets(self):
    keys = set()
    for path in REFERENCE_CONFIGS:
      keys |= set(leaf_keys(common.load_config(path)))
    self.assertEqual(keys, {k.key for k in schema.KEYS if k.reference})

  def test_no_reference_key_is_unsupported(self):
    self.assertEqual([k.key for k in schema.KEYS
                      if k.reference and k.status == schema.UNSUPPORTED], [])


class TableTest(absltest.TestCase):

  def test_entries_are_complete(self):
    self.assertLen(schema.TABLE, len(schema.KEYS))  # No key twice.
    for entry in schema.KEYS:
      self.assertIn(entry.status, schema.STATUSES, entry.key)
      self.assertTrue(entry.description, entry.key)
      if entry.status == schema.IMPLEMENTED:
        self.assertTrue(entry.module, entry.key)
        self.assertFalse(entry.why, entry.key)
      else:
        self.assertTrue(entry.why, entry.key)
        self.assertFalse(entry.module, entry.key)
      if entry.status == schema.UNSUPPORTED:
        self.assertIsNotNone(entry.accepts, entry.key)
      parent = entry.key.rpartition('.')[0]
      if parent:
        self.assertTrue(schema.TABLE[parent].section, entry.key)

  def test_an_implemented_key_is_read_by_its_module(self):
    for entry in schema.KEYS:
      if entry.status != schema.IMPLEMENTED:
        continue
      spec = importlib.util.find_spec(entry.module)
      self.assertIsNotNone(spec, entry.key)
      with open(spec.origin) as f:
        source = f.read()
      name = entry.key.rpartition('.')[2]
      # `config.get('name')`, `config.name`, or a ModelConfig field's '/name'.
      self.assertTrue(re.search(rf"'/?{name}'|\.{name}\b", source),
                      f'{entry.key}: not read in {entry.module}')

  def test_model_keys_have_descriptions(self):
    rows = schema.model_keys()
    keys = [key for key, *_ in rows]
    for key in ('hidden_size', 'tokenizer.patches.size',
                'tokenizer.temporal_encoding_config.kernel_init_method',
                'attention_config.type', 'stochastic_depth',
                'stochastic_droplayer_rate', 'positional_embedding',
                '/model_dtype_str'):
      self.assertIn(key, keys)
    for key, name, _, description in rows:
      self.assertTrue(description, f'{key} ({name}) has no Attributes: line')


# ConfigDict methods: not keys.
_METHODS = {n for n in dir(ml_collections.ConfigDict) if not n.startswith('_')}
# What these parameter names hold, where functions take a part of the config
# (the typed sections, `OptimizerConfig` and the like, are not parts: Python
# refuses an attribute they lack).
_PARAMETERS = {'config': '', 'dc': 'dataset_configs',
               'aug': 'dataset_configs.augmentation_params',
               'mesh_config': 'mesh'}


def _join(base: str, key: str) -> str:
  return f'{base}.{key}' if base else key


def _path(node: ast.AST, aliases: Dict[str, str]) -> Optional[str]:
  """The config path `node` evaluates to, or None if it is not one."""
  if isinstance(node, ast.Name):
    return aliases.get(node.id)
  if isinstance(node, ast.Attribute):
    base = _path(node.value, aliases)
    if base is None or node.attr in _METHODS:
      return None
    return _join(base, node.attr)
  if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and
      node.func.attr == 'get' and node.args and
      isinstance(node.args[0], ast.Constant) and
      isinstance(node.args[0].value, str)):
    base = _path(node.func.value, aliases)
    return None if base is None else _join(base, node.args[0].value)
  if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
    base = _path(node.value, aliases)
    if base is not None and isinstance(node.slice.value, str):
      return _join(base, node.slice.value)
  if isinstance(node, ast.BoolOp):  # `config.get('x') or ConfigDict()`
    return _path(node.values[0], aliases)
  return None


def config_reads(path: str) -> Set[str]:
  """The config keys the functions of the file at `path` read or set.

  A function's `config` (and `dc`, `lr_configs`, ... see `_PARAMETERS`) and
  the names it assigns from them (`dc = config.dataset_configs`) are followed
  through attributes, `.get('key')` and `['key']`.
  """
  with open(path) as f:
    tree = ast.parse(f.read())
  keys = set()
  for function in ast.walk(tree):
    if not isinstance(function, (ast.FunctionDef, ast.Lambda)):
      continue
    args = function.args
    aliases = {a.arg: _PARAMETERS[a.arg]
               for a in args.posonlyargs + args.args + args.kwonlyargs
               if a.arg in _PARAMETERS}
    for node in ast.walk(function):
      if (isinstance(node, ast.Assign) and len(node.targets) == 1 and
          isinstance(node.targets[0], ast.Name)):
        value = _path(node.value, aliases)
        if value is not None:
          aliases[node.targets[0].id] = value
    for node in ast.walk(function):
      key = _path(node, aliases)
      if key:
        keys.add(key)
  return keys


def _model_keys() -> Set[str]:
  """Keys under `config.model` of both model families (and their parents)."""
  keys = set()
  rows = (schema.model_keys() +
          schema.model_keys(models.X2Plus1DConfig))
  for key, *_ in rows:
    if not key.startswith('/'):
      parts = key.split('.')
      keys |= {'.'.join(parts[:i]) for i in range(1, len(parts) + 1)}
  return keys


def known(key: str, model_keys: Set[str]) -> bool:
  """Whether the table knows `key` (past a leaf: an attribute of its value)."""
  parts = key.split('.')
  for i in range(1, len(parts) + 1):
    prefix = '.'.join(parts[:i])
    if prefix == 'model':
      rest = '.'.join(parts[1:])
      return not rest or rest in model_keys or any(
          rest.startswith(k + '.') for k in ('spatial_transformer',
                                             'temporal_transformer'))
    entry = schema.TABLE.get(prefix)
    if entry is None:
      return False
    if not entry.section:
      return True
  return True


class PackageReadsTest(absltest.TestCase):

  def test_every_key_the_package_reads_is_known(self):
    # Under models/ `config` is a ModelConfig, whose fields are its own.
    files = [p for p in glob.glob(os.path.join(ROOT, 'tokenlearner_jax', '**',
                                               '*.py'), recursive=True)
             if os.sep + 'models' + os.sep not in p]
    model_keys = _model_keys()
    unknown = {}
    reads = set()
    for path in files:
      for key in config_reads(path):
        reads.add(key)
        if not known(key, model_keys):
          unknown[key] = os.path.relpath(path, ROOT)
    self.assertEqual(unknown, {})
    # The walk does find reads through aliases and `.get`.
    for key in ('dataset_configs.num_frames',
                'dataset_configs.augmentation_params.prob_color_drop',
                'max_checkpoints_to_keep'):
      self.assertIn(key, reads)

  def test_an_unknown_read_is_found(self):
    path = os.path.join(self.create_tempdir().full_path, 'reader.py')
    with open(path, 'w') as f:
      f.write(textwrap.dedent('''\
          def read(config):
            dc = config.dataset_configs
            return dc.get('num_framez'), config.lr_configs.warmup_steps
          '''))
    reads = config_reads(path)
    self.assertIn('dataset_configs.num_framez', reads)
    self.assertFalse(known('dataset_configs.num_framez', _model_keys()))
    self.assertTrue(known('lr_configs.warmup_steps', _model_keys()))


class DocsTest(absltest.TestCase):

  def test_docs_config_keys_md_is_up_to_date(self):
    path = os.path.join(self.create_tempdir().full_path, 'config_keys.md')
    with contextlib.redirect_stdout(io.StringIO()):
      self.assertEqual(config_keys.main(['--markdown', path]), 0)
    with open(path) as f:
      generated = f.read()
    with open(os.path.join(ROOT, 'docs', 'config_keys.md')) as f:
      committed = f.read()
    self.assertEqual(committed, generated,
                     f'docs/config_keys.md is stale: run {config_keys.COMMAND}')

  def test_every_key_is_in_the_docs(self):
    text = config_keys.markdown()
    for entry in schema.KEYS:
      self.assertIn(f'| `{entry.key}` |', text)
    for key, *_ in schema.model_keys():
      self.assertIn(f'`{key[1:]}`' if key.startswith('/') else
                    f'`model.{key}`', text)
    self.assertIn('`model.tokenizer.patches.size` (ViViT layout: '
                  '`model.patches.size`)', text)


class DefaultsDeclaredOnceTest(absltest.TestCase):

  def test_library_code_passes_no_default_of_a_key_the_schema_defaults(self):
    # `schema.complete` fills `schema.KEYS`' defaults once; a reader that
    # passes its own (`config.get('key', default)`) declares it twice.
    leaves = {entry.key.split('.')[-1] for entry in schema.KEYS
              if entry.default is not schema.NO_DEFAULT}
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, 'tokenlearner_jax', '**',
                                              '*.py'), recursive=True)):
      with open(path) as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and
            isinstance(node.func, ast.Attribute) and
            node.func.attr == 'get' and len(node.args) == 2 and
            isinstance(node.args[0], ast.Constant) and
            node.args[0].value in leaves):
          found.append(f'{os.path.relpath(path, ROOT)}:{node.lineno} '
                       f'get({node.args[0].value!r}, ...)')
    self.assertEqual(found, [])


if __name__ == '__main__':
  absltest.main()
