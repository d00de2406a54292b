"""python -m frontier_jax.cli: the `frontier` command."""
import sys

from . import main

sys.exit(main())
