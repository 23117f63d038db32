"""`python -m topreward.cli`: the same as the `topreward` command."""
import sys

from topreward.cli import main

sys.exit(main())
