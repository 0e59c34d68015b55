"""``python -m dlga.runs``: the run cache's command line (:func:`dlga.runs.cache.main`)."""

import sys

from dlga.runs.cache import main

if __name__ == "__main__":
    sys.exit(main())
