r"""Table 11 in miniature: X(2+1)D's module slot on multi-label digit events
(`tokenlearner_jax.studies.events`).

  python scripts/event_study.py --workdir=/tmp/event_study --out=docs
  python scripts/event_study.py --workdir=/tmp/event_study --out=docs \
      --report_only   # the table from the runs finished so far

Exits non-zero if a run failed.
"""

import sys

from tokenlearner_jax import errors
from tokenlearner_jax.studies import events

if __name__ == '__main__':
  sys.exit(errors.exit_on_known_fault(events.main))
