"""``python -m service.cli``: the ``metaml`` command."""

import sys

from service.cli import main

sys.exit(main())
