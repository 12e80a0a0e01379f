"""``python3 -m jobq``: the jobq command line (jobq.cli)."""
import sys

from .cli import main

sys.exit(main())
