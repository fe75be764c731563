import sys

from agent.training.cli import main

sys.exit(main())
