"""`python -m nst_utils` runs the `nst` command."""

import sys

from .cli import main

sys.exit(main())
