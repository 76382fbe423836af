import sys

from brainmets.cli import main

sys.exit(main())
