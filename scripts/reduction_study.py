r"""TokenLearner against ToMe, EViT, ATS and PatchMerger at matched compute
(`tokenlearner_jax.studies.reduction`).

  python scripts/reduction_study.py --workdir=/tmp/reduction_study --out=docs
  python scripts/reduction_study.py --workdir=/tmp/reduction_study \
      --out=docs --report_only   # the tables from the runs finished so far

Exits non-zero if a run failed.
"""

import sys

from tokenlearner_jax import errors
from tokenlearner_jax.studies import reduction

if __name__ == '__main__':
  sys.exit(errors.exit_on_known_fault(reduction.main))
