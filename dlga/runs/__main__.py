"""``python -m dlga.runs``: the run cache's command line (:func:`dlga.runs.cli.main`)."""

import sys

from dlga.runs.cli import main

if __name__ == "__main__":
    sys.exit(main())
