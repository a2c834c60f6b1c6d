"""``python -m slimdiar``: the ``slimdiar`` command line."""

import sys

try:
    from slimdiar.interrupts import interrupts_held

    with interrupts_held():
        from slimdiar.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line is still being imported
    print("slimdiar: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
