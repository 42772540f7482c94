"""``python -m fixative``: the ``fixative`` command (also ``accelerate launch -m fixative protect ...``)."""

import sys

from fixative.cli.main import main

sys.exit(main())
