"""``python -m mlcanary_local.demo``: the same as ``mlcanary demo``."""

import sys

from mlcanary_local.demo.story import main

sys.exit(main())
