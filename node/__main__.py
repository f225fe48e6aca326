"""``python -m node``: the same command line as ``bftnode`` (node.cli)."""

import sys

from node.cli import main

if __name__ == "__main__":
    sys.exit(main())
