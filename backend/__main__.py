"""``python -m backend`` is the ``tunedeck`` command (the command line itself is ``cli.py``, a front end beside
``app.py``; this entry point stays so that scripts calling ``python -m backend`` keep working)."""

import sys

from cli import main

sys.exit(main())
