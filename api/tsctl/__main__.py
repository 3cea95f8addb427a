"""``python -m api.tsctl``: the same as the ``tsctl`` command."""

import sys

from .cli import main

sys.exit(main())
