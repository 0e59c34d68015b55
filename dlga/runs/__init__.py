"""Runs: the run cache, the run directory's format and where runs execute.

- :mod:`dlga.runs.cache`: run specs, their ids, executing what is missing, listing, comparing;
- :mod:`dlga.runs.cli`: the command line (``python -m dlga.runs``, ``python -m dlga runs``);
- :mod:`dlga.runs.rundir`: the files of a run directory and their format version;
- :mod:`dlga.runs.executors`: the executor seam (local processes, serial, Dask).

This file imports none of them; none of them imports TensorFlow at import time.
"""
