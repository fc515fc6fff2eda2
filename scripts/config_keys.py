"""The config keys the trainer knows, as Markdown (docs/config_keys.md).

The table is `tokenlearner_jax.configs.schema.KEYS` (each key implemented,
a no-op or unsupported) with `config.model`'s keys from `ModelConfig`.

  python scripts/config_keys.py              # print it
  python scripts/config_keys.py --markdown   # write docs/config_keys.md
"""

import argparse
import os
import sys
from typing import List, Optional

from tokenlearner_jax.configs import schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKDOWN = os.path.join(ROOT, 'docs', 'config_keys.md')


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--markdown', nargs='?', const=MARKDOWN, default=None,
                      metavar='PATH',
                      help='Write the table to PATH (default '
                      f'{os.path.relpath(MARKDOWN, ROOT)}).')
  args = parser.parse_args(argv)
  text = schema.markdown()
  if args.markdown:
    with open(args.markdown, 'w') as f:
      f.write(text)
    print(f'Wrote {args.markdown}.')
  else:
    print(text, end='')
  return 0


if __name__ == '__main__':
  sys.exit(main())
