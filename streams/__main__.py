"""`python -m streams`: the command line (see `streams.cli`)."""
import sys

from streams.cli import main

sys.exit(main())
