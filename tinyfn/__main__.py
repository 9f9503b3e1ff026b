import sys

from tinyfn.cli import main

sys.exit(main())
