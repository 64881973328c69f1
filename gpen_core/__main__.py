"""`python -m gpen_core restore|models|download|bench` (see gpen_core.cli)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
