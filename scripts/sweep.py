"""Runs a grid of `--config.x=y` overrides, one workdir each, and tables them
(`tokenlearner_jax.studies.sweep`; the runner's rules: `studies.runs`).

  python scripts/sweep.py --config=configs/demo_moving_digits.py \\
      --workdir=/tmp/sweep --grid=model.tokenizer.tokenlearner_loc=0,1,2,3 \\
      --grid=rng_seed=0,1,2 --set=num_training_steps=2000 --parallel=2 \\
      --group_over=rng_seed
  python scripts/sweep.py --config=configs/demo_moving_digits.py \\
      --workdir=/tmp/sweep --from_config   # the grid of the config's sweep()

Finished points of the requested config are skipped, interrupted ones resume,
stale ones (another config recorded) are moved to `WORKDIR/stale/` and rerun.
`--launcher=slurm` (submitit jobs) or `--launcher=command
--launch_template='... {cmd} ...'` run the points on a cluster
(docs/training.md, "Sweeps on a cluster").
Exits non-zero if a run failed (the others still run and are tabled).
"""

import sys

from tokenlearner_jax import errors
from tokenlearner_jax.studies import sweep

if __name__ == '__main__':
  sys.exit(errors.exit_on_known_fault(sweep.main, None, __doc__))
