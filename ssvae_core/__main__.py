"""Entry point of `python -m ssvae_core`."""

import sys

from ssvae_core.cli import main

sys.exit(main())
