"""The study library: runs as data, the runner, paired verdicts, reports.

`runs` (a trainer or evaluator process as data, and the runner that skips
finished runs and sets aside stale ones), `stats` (claims and their paired
verdicts), `report` (final metrics, tables, plots, marked sections of a
results file), `study` (the flags and flow every study script shares), and
one module per study: `sweep` (a grid of overrides), `ablations` (the paper's
ablations in miniature), `fewshot_location`, `events` (Table 11 in
miniature) and `reduction` (TokenLearner against ToMe, EViT, ATS and
PatchMerger). `scripts/` holds their mains.
"""
