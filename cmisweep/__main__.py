import sys

from cmisweep.cli import main

sys.exit(main())
