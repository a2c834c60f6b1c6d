import sys

from slimdiar.cli import main

sys.exit(main())
