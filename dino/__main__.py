"""``python -m dino`` = the ``dino`` console script."""

import sys

from dino.cli import main

sys.exit(main())
