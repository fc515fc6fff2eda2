"""The paper's ablations in miniature (`scripts/reproduce.py`).

Each variant trains the `configs/demo_moving_digits.py` model (ViViT-mu, 4
blocks, 8-frame 32x32 clips, 40 classes) for `--steps` steps and `--seeds`
seeds, one run per point in `WORKDIR/<variant>_seed<s>`; then each study's
table, plot and verdicts go between markers in `OUT/results.md`.

Studies: location (TokenLearner before block 0, 1, 2, 3 of 4, or none),
tokens (4, 8, 16), version (v1.1 vs v1.0), fuser (none, TokenFuser, unpool,
reprojection), reduction (TokenLearner vs 2x2 pooling vs fully connected
tokens), transfer (pre-training the same model on `multi_digits` images,
then fine-tuning with `init_from`, vs training from scratch for the same
steps).
"""

import dataclasses
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from tokenlearner_jax.configs import common
from tokenlearner_jax.studies import report
from tokenlearner_jax.studies import runs as runs_lib
from tokenlearner_jax.studies import stats
from tokenlearner_jax.studies import study as study_lib

MOVING = 'configs/demo_moving_digits.py'
MULTI = 'configs/demo_multi_digits.py'
# Model fields the pre-training run copies from the fine-tuning config.
SHARED_MODEL_FIELDS = ('hidden_size', 'num_heads', 'mlp_dim', 'num_layers',
                       'tokenizer.num_tokens', 'tokenizer.tokenlearner_loc')


@dataclasses.dataclass(frozen=True)
class Variant:
  """One trained configuration (run once per seed).

  Attributes:
    name: Directory name under the workdir.
    label: Name in tables and plots.
    loc: `tokenlearner_loc` as a fraction of the depth; None: no TokenLearner.
    tokenizer: `model.tokenizer` overrides on top of the moving_digits
      config.
    pretrain: Pre-train on multi_digits (the same model) instead.
    init_from: Name of the pre-training variant whose same-seed run this one
      fine-tunes from.
  """
  name: str
  label: str
  loc: Optional[float] = 0.5
  tokenizer: Tuple[Tuple[str, Any], ...] = ()
  pretrain: bool = False
  init_from: Optional[str] = None

  @property
  def overrides(self) -> Dict[str, Any]:
    return {f'model.tokenizer.{k}': v for k, v in self.tokenizer}


@dataclasses.dataclass(frozen=True)
class Study:
  """Variants compared together, in one table and one plot.

  Attributes:
    name: `--studies` key, section and plot file suffix.
    title: Section title.
    variants: Variant names, in table order.
    claims: What the paper says about them.
  """
  name: str
  title: str
  variants: Tuple[str, ...]
  claims: Tuple[stats.Claim, ...]


VARIANTS = {v.name: v for v in (
    Variant('no_tl', 'no TokenLearner', loc=None),
    Variant('tl8_at0', 'TL 8 at 0', loc=0.0),
    Variant('tl8_at025', 'TL 8 at 0.25', loc=0.25),
    Variant('tl8_at05', 'TL 8 at 0.5'),
    Variant('tl8_at075', 'TL 8 at 0.75', loc=0.75),
    Variant('tl4_at05', 'TL 4 at 0.5', tokenizer=(('num_tokens', 4),)),
    Variant('tl16_at05', 'TL 16 at 0.5', tokenizer=(('num_tokens', 16),)),
    Variant('tl8_v10', 'TL v1.0 (sum) 8 at 0.5',
            tokenizer=(('use_v11', False),)),
    Variant('tl8_fuser', 'TL 8 + TokenFuser at 0.5',
            tokenizer=(('use_tokenfuse', True),)),
    Variant('tl8_unpool', 'TL 8 + unpool at 0.5',
            tokenizer=(('use_tokenfuse', True), ('fuser_type', 'unpool'))),
    Variant('tl8_reprojection', 'TL 8 + reprojection at 0.5',
            tokenizer=(('use_tokenfuse', True),
                       ('fuser_type', 'reprojection'))),
    Variant('pool2x2_at05', '2x2 pooling at 0.5',
            tokenizer=(('token_reduction', 'pooling'),
                       ('pooling_window', 2))),
    Variant('dense8_at05', 'FC 8 tokens at 0.5',
            tokenizer=(('token_reduction', 'dense'),)),
    Variant('pretrain_multi', 'pre-training on multi_digits', pretrain=True),
    Variant('tl8_finetuned', 'TL 8 at 0.5, pre-trained',
            init_from='pretrain_multi'),
)}

_FUSER = 'Fuser fig.'
STUDIES = {s.name: s for s in (
    Study('location', 'Where to put TokenLearner',
          ('no_tl', 'tl8_at0', 'tl8_at025', 'tl8_at05', 'tl8_at075'),
          stats.LOCATION_CLAIMS),
    Study('tokens', 'How many tokens',
          ('tl4_at05', 'tl8_at05', 'tl16_at05'),
          (stats.from_paper('tl16_at05', 'tl8_at05', 'similar', 'T4',
                            'B/16 @384, 16-TL at 6', 'B/16 @384, 8-TL at 6'),)),
    Study('version', 'TokenLearner v1.1 vs v1.0',
          ('tl8_at05', 'tl8_v10'),
          (stats.Claim('tl8_at05', 'tl8_v10', 'higher',
                       'Code only (no paper number): the v1.1 docstring, "we '
                       'confirmed that this version works better in '
                       'general"'),)),
    Study('fuser', 'TokenFuser and its alternatives',
          ('tl8_at05', 'tl8_fuser', 'tl8_unpool', 'tl8_reprojection'),
          (stats.from_paper('tl8_fuser', 'tl8_at05', 'higher', 'T4',
                            'B/16 @384, 8-TL at 6 + Fuser',
                            'B/16 @384, 8-TL at 6'),
           stats.from_paper('tl8_fuser', 'tl8_unpool', 'higher', _FUSER,
                            'B/16 @384, 8-TL at 6 + TokenFuser',
                            'B/16 @384, 8-TL at 6 + unpool'),
           stats.from_paper('tl8_reprojection', 'tl8_fuser', 'similar',
                            _FUSER, 'B/16 @384, 8-TL at 6 + reprojection',
                            'B/16 @384, 8-TL at 6 + TokenFuser',
                            gflops=True))),
    Study('reduction', 'Learned tokens vs pooling and FC tokens',
          ('tl8_at05', 'tl4_at05', 'pool2x2_at05', 'dense8_at05'),
          (stats.Claim('tl4_at05', 'pool2x2_at05', 'higher',
                       'Table 5: 16-TL at 12, 87.68 vs 4x4 pool at 12, 83.93 '
                       '(the same GFLOPs; here 4 tokens a slice each)'),
           stats.Claim('tl8_at05', 'dense8_at05', 'higher',
                       'Charades text (via the review): spatial attention '
                       '59.6 vs fully connected tokens 56.6'))),
    Study('transfer', 'Pre-training on images, fine-tuning on video',
          ('tl8_at05', 'tl8_finetuned'),
          (stats.Claim('tl8_finetuned', 'tl8_at05', 'higher',
                       'Every video result of the paper starts from an '
                       'image-pretrained (JFT) ViT, inflated to tubelets'),)),
)}


def load_config(path: str, arg: str):
  """`get_config(arg)` of the config file at `path` (relative to the repo)."""
  return common.load_config(runs_lib.config_flag(path).split(':')[0],
                            arg or None)


def config_arg(loc: Optional[int], runlocal: bool) -> str:
  return ','.join([f'tokenlearner_loc={loc}'] + (['runlocal'] if runlocal
                                                  else []))


def block_index(variant: Variant, num_layers: int) -> Optional[int]:
  """The block the variant's TokenLearner comes before (None: none)."""
  return None if variant.loc is None else round(variant.loc * num_layers)


def schedule(steps: int, warmup: int) -> Dict[str, int]:
  """Train `steps` steps, evaluating and saving at the end only."""
  return {'num_training_steps': steps, 'log_eval_steps': steps,
          'checkpoint_steps': steps, 'lr_configs.warmup_steps': warmup}


def run(variant: Variant, seed: int, root: str, steps: int, runlocal: bool,
        extra: Mapping[str, Any] = ()) -> runs_lib.Run:
  """The run of one (variant, seed); `extra`: more overrides (`--set`)."""
  depth = load_config(MOVING, config_arg(2, runlocal)).model.num_layers
  loc = block_index(variant, depth)
  overrides = {**variant.overrides, 'rng_seed': seed, **dict(extra)}
  if not runlocal:  # runlocal keeps its few steps, evals and checkpoints.
    overrides.update(schedule(steps, min(200, steps // 5)))
  if variant.init_from:
    overrides.update({
        'init_from.checkpoint_path': report.run_dir(root, variant.init_from,
                                                    seed),
        'init_from.positional_embed_size_change': 'resize_tile'})
  workdir = report.run_dir(root, variant.name, seed)
  if not variant.pretrain:
    return runs_lib.Run(workdir, f'{MOVING}:{config_arg(loc, runlocal)}',
                        overrides)
  # The same model on multi_digits images: 2-D patches, one 8x8 grid.
  moving = load_config(MOVING, config_arg(loc, runlocal))
  for field in SHARED_MODEL_FIELDS:
    value = moving.model
    for part in field.split('.'):
      value = value[part]
    overrides[f'model.{field}'] = value
  overrides['batch_size'] = moving.batch_size
  return runs_lib.Run(workdir, MULTI + (':runlocal' if runlocal else ''),
                      overrides)


def only_variants(study: Study, names: Sequence[str]) -> Study:
  """`study` with only the variants `names` and the claims between them."""
  study_lib.check_choices('variants', names, VARIANTS)
  kept = tuple(n for n in study.variants if n in names)
  return dataclasses.replace(
      study, variants=kept,
      claims=tuple(c for c in study.claims if c.a in kept and c.b in kept))


def needed_variants(studies: Sequence[Study]) -> List[Variant]:
  """The variants of `studies` and the pre-training runs they start from."""
  names = list(dict.fromkeys(n for s in studies for n in s.variants))
  extra = [VARIANTS[n].init_from for n in names if VARIANTS[n].init_from]
  return [VARIANTS[n] for n in dict.fromkeys(extra + names)]


def claim_text(claim: stats.Claim, runs: report.Runs) -> str:
  return report.claim_line(claim, VARIANTS[claim.a].label,
                           VARIANTS[claim.b].label, runs, 'accuracy')


def plot(study: Study, runs: report.Runs, path: str) -> None:
  """Accuracy (mean +- std over seeds) against MMACs per clip."""
  points = [report.Point(VARIANTS[n].label,
                         1000 * runs[n][0]['gmacs_per_example'],
                         tuple(r['accuracy'] for r in runs[n]))
            for n in study.variants if runs.get(n)]
  report.plot(path, [('MMACs per clip (multiply-adds, one view)', points)],
              'test accuracy (%): mean ± std, x: seeds', study.title)


def setting(variant: Variant) -> str:
  where = 'no TokenLearner' if variant.loc is None else f'loc {variant.loc}'
  return ', '.join([where] + [f'{k}={v}' for k, v in variant.tokenizer] +
                   ([f'init_from {variant.init_from}']
                    if variant.init_from else []))


def study_section(study: Study, runs: report.Runs) -> str:
  """A study's section: its table, pre-training line, claims, plot."""
  lines = [f'## {study.title}', '',
           f'![{study.title}](results_{study.name}.png)', '',
           '| variant | overrides | MMACs/clip | accuracy (%) | top-5 (%) | '
           'per seed |', '|---|---|---|---|---|---|']
  for name in study.variants:
    variant, done = VARIANTS[name], runs.get(name, [])
    if not done:
      lines.append(f'| {variant.label} | {setting(variant)} | | (no finished '
                   'run) | | |')
      continue
    lines.append(
        f'| {variant.label} | {setting(variant)} | '
        f'{1000 * done[0]["gmacs_per_example"]:.2f} | '
        f'{stats.pm(report.percent([r["accuracy"] for r in done]))} | '
        f'{stats.pm(report.percent([r["accuracy_top_5"] for r in done]))} | '
        f'{report.per_seed([r["accuracy"] for r in done])} |')
  lines.append('')
  for source in dict.fromkeys(VARIANTS[n].init_from for n in study.variants
                              if VARIANTS[n].init_from):
    done = runs.get(source, [])

    def pm(key: str, rows=done) -> str:
      return stats.pm(report.percent([r[key] for r in rows]))

    if done:
      lines += [
          f'{VARIANTS[source].label} (the same model on 2-D patches of '
          f'64x64 multi_digits images, multi-label, {len(done)} seed(s)): '
          f'prec@1 {pm("prec@1")}%, mAP {pm("mean_average_precision")}%.',
          '']
  lines += [f'* Paper: {c.source}. Miniature: {claim_text(c, runs)}.'
            for c in study.claims]
  lines += ['', report.verdict_note(len(study.claims))]
  return report.section(f'ablations_{study.name}', lines)


def sections(studies: Sequence[Study], runs: report.Runs, out: str,
             invocation: str, steps: int, seeds: Sequence[int],
             batch: int) -> List[str]:
  """The verdicts section and one section per study (plots to `out`)."""
  summary = [
      '## Verdicts', '',
      f'Regenerate (tables, plots, verdicts): `{invocation}`', '',
      f'Each variant: {steps} steps of {batch} clips from scratch, once per '
      f'seed ({", ".join(map(str, seeds))}).', '']
  summary += [f'* {s.title}: {claim_text(c, runs)}.'
              for s in studies for c in s.claims]
  summary += ['', report.verdict_note(sum(len(s.claims) for s in studies))]
  out_sections = [report.section('ablations_verdicts', summary)]
  for study in studies:
    out_sections.append(study_section(study, runs))
    if any(runs.get(n) for n in study.variants):
      plot(study, runs, os.path.join(out, f'results_{study.name}.png'))
  return out_sections


def parse_args(argv):
  parser = study_lib.arguments(__doc__, steps=1500, parallel=2)
  parser.add_argument('--studies', default=','.join(STUDIES),
                      help=f'Comma-separated, of {list(STUDIES)}.')
  parser.add_argument('--variants', default='',
                      help='Comma-separated variant names: only these (and '
                      'the claims between them) of the studies.')
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  study_lib.check_choices('studies', args.studies.split(','), STUDIES)
  studies = [STUDIES[s] for s in args.studies.split(',')]
  if args.variants:
    studies = [only_variants(s, args.variants.split(',')) for s in studies]
  variants = needed_variants(studies)
  extra = study_lib.set_overrides(args.set)

  def stage(fine_tuning: bool) -> study_lib.Stage:
    return lambda root, seeds: [
        run(v, seed, root, args.steps, args.runlocal, extra)
        for v in variants if bool(v.init_from) == fine_tuning
        for seed in seeds]

  def write(root: str, seeds: List[int], out: str) -> List[str]:
    runs = report.final_metrics(root, [v.name for v in variants], seeds)
    batch = load_config(MOVING, config_arg(2, args.runlocal)).batch_size
    return sections(studies, runs, out,
                    study_lib.invocation('reproduce.py', argv), args.steps,
                    seeds, batch)

  return study_lib.run(args, [stage(False), stage(True)], write)
