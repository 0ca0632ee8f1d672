"""``python -m regfree.cli``: the same as the ``regfree`` command."""

import sys

from regfree.cli import main

if __name__ == "__main__":
    sys.exit(main())
