import sys

from wardsync.cli import main

sys.exit(main())
