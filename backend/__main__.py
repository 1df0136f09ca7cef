"""``python -m backend`` is the ``tunedeck`` command."""

import sys

from backend.cli import main

sys.exit(main())
