"""`python -m graphnet` is the `graphnet` command."""

import sys

from graphnet.cli import main

sys.exit(main())
