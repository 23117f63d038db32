"""`python -m topreward_ros.core.cli`: the same as the `topreward` command."""
import sys

from . import main

sys.exit(main())
