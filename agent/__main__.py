"""`python -m agent`: the foreground agent, as `jupiter agent` starts it (see agent/foreground.py)."""

import sys

from agent.foreground import main

sys.exit(main())
