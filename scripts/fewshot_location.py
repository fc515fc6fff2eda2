r"""Where to put TokenLearner, measured by few-shot linear accuracy of
multi-label pre-trained models (`tokenlearner_jax.studies.fewshot_location`).

  python scripts/fewshot_location.py --workdir=/tmp/fewshot_location --out=docs
  python scripts/fewshot_location.py --workdir=/tmp/fewshot_location \
      --out=docs --report_only   # the table from the runs finished so far

Exits non-zero if a run failed.
"""

import sys

from tokenlearner_jax import errors
from tokenlearner_jax.studies import fewshot_location

if __name__ == '__main__':
  sys.exit(errors.exit_on_known_fault(fewshot_location.main))
