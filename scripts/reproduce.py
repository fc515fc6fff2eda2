r"""The paper's ablations in miniature: tables, plots and verdicts, one command
(`tokenlearner_jax.studies.ablations`).

  python scripts/reproduce.py --workdir=/tmp/reproduce --out=docs
  python scripts/reproduce.py --workdir=/tmp/reproduce --out=docs \
      --report_only   # tables and plots from the runs finished so far
  python scripts/reproduce.py --workdir=/tmp/reproduce_3000 --steps=3000 \
      --studies=location --variants=no_tl,tl8_at0,tl8_at05 \
      --out=docs/location_3000_steps

Exits non-zero if a run failed.
"""

import sys

from tokenlearner_jax import errors
from tokenlearner_jax.studies import ablations

if __name__ == '__main__':
  sys.exit(errors.exit_on_known_fault(ablations.main))
