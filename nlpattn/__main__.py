"""`python -m nlpattn` runs the CLI."""
import sys

from nlpattn.cli import main

sys.exit(main())
