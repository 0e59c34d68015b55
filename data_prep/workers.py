"""Worker processes of the data path (the synthetic cohort and preprocessing).

Both start their workers with the ``spawn`` method: never fork a process that may hold
TensorFlow or dlib threads.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import sys
from typing import Iterator


@contextlib.contextmanager
def spawn_context() -> Iterator[mp.context.BaseContext]:
    """The ``spawn`` context, for workers started inside this block; they do not import the
    parent's ``__main__``.

    A spawned child first imports the module its parent runs as ``__main__``. Under
    ``python -m dlga.book`` that is the book and TensorFlow, about 10 s per worker and per
    pool, for workers that only render faces or find them (a demo book starts ten such pools).
    Their functions live in importable modules, so they do not need it: while this block is
    open, ``__main__`` shows multiprocessing neither its module spec nor its file, which is what
    it reads to decide what the children import.
    """
    main = sys.modules.get("__main__")
    hidden = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__} if main else {}
    try:
        if main is not None:
            main.__dict__.pop("__file__", None)
            if "__spec__" in hidden:
                main.__spec__ = None
        yield mp.get_context("spawn")
    finally:
        if main is not None:
            main.__dict__.update(hidden)
