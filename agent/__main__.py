"""`python -m agent` is `hostguard`."""

import sys

from .cli import main

sys.exit(main())
