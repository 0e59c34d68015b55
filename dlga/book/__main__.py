"""``python -m dlga.book``: the book's command line (:func:`dlga.book.build.main`)."""

import sys

from dlga.book.build import main

if __name__ == "__main__":
    sys.exit(main())
