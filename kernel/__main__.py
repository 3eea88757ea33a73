"""``python -m kernel`` is ``orion-kernel``."""

import sys

from ._cli import main

sys.exit(main())
