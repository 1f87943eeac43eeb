"""``python -m pytest_dtsvirt.cli``: the ``dtsvirt`` command."""

import sys

from pytest_dtsvirt.cli import main

sys.exit(main())
