"""Where runs execute: one :class:`concurrent.futures.Executor` seam (Decisions: Runs at scale).

Runs are independent, so the unit of parallelism is the run. Everything that trains many runs
(the run cache's :func:`dlga.runs.cache.execute_all`, ``python -m dlga.runs run``, the book build)
takes an executor, given as an object or as a string:

* ``"local"`` (default): worker processes on this machine, one per core, each TensorFlow
  limited to its share of the cores' threads (``"local:N"``: N workers);
* ``"serial"``: one after another in this process (debugging, tests);
* ``"dask://HOST:PORT"``: the workers of a Dask ``distributed`` scheduler (started by hand,
  by ``dask-jobqueue`` on SLURM/PBS, or a ``LocalCluster``);
* any :class:`concurrent.futures.Executor`, e.g. ``distributed.Client(...).get_executor()``.

The run cache stays the only record of what is done: a worker trains into
``runs/<id>.partial/`` and renames it when complete, so two workers never collide and an
interrupted grid resumes where it stopped. A run's numbers do not depend on the worker that
ran it or on what ran beside it: every run sets its seeds and TensorFlow's op determinism, and
every worker uses the same number of threads (:data:`THREADS_PER_RUN`).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Callable

# Every run trains with this many TensorFlow intra-op threads, wherever it runs: the sum of a
# reduction can depend on how it is split over threads, so one fixed count keeps a run's
# numbers independent of its worker. One thread per run and one run per core is also the
# fastest way to use a small machine (two one-thread processes beat one two-thread process).
THREADS_PER_RUN = 1


class SerialExecutor(Executor):
    """Runs each submitted call at once, in this process (an Executor with no workers)."""

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # the caller sees it through the future, as with a pool
            future.set_exception(exc)
        return future


def limit_threads(threads: int = THREADS_PER_RUN) -> bool:
    """Set TensorFlow's thread pools to ``threads`` intra-op and 1 inter-op thread.

    Returns False when TensorFlow has already started its pools in this process (the setting
    can only be made once, before the first operation); the caller's numbers then use the
    pools as they are.
    """
    import tensorflow as tf  # deferred: importing TensorFlow costs seconds and workers do it once

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        return (tf.config.threading.get_intra_op_parallelism_threads() == threads)
    return True


def _worker_init(threads: int) -> None:
    # oneDNN is already switched on: unpickling this function imported dlga (dlga.settings).
    os.environ["OMP_NUM_THREADS"] = str(threads)
    limit_threads(threads)


def worker_count(executor: Executor) -> int:
    """How many calls ``executor`` runs at once: its workers (a process pool's), 1 for the
    serial one, a Dask cluster's threads (:func:`dask_executor`), else this machine's cores."""
    if isinstance(executor, SerialExecutor):
        return 1
    return int(getattr(executor, "_max_workers", None) or os.cpu_count() or 1)


def local_executor(workers: int | None = None, threads: int = THREADS_PER_RUN) -> ProcessPoolExecutor:
    """Worker processes on this machine (default: one per core), started fresh ("spawn": a
    forked TensorFlow is unsafe), each limited to ``threads`` TensorFlow threads."""
    cores = os.cpu_count() or 1
    workers = workers or max(1, cores // threads)
    if workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init, initargs=(threads,),
    )


def dask_executor(address: str) -> Executor:
    """The executor of a Dask ``distributed`` scheduler at ``address`` (``HOST:PORT`` or
    ``tcp://HOST:PORT``); its workers need this project installed."""
    try:
        from distributed import Client  # deferred: optional, and slow to import
    except ImportError as exc:  # pragma: no cover - the test and cluster extras install it
        raise ImportError("executor 'dask://...' needs the `distributed` package: pip install 'dask[distributed]' "
                          "(or this project's `cluster` extra)") from exc
    if "://" not in address:
        address = f"tcp://{address}"
    from distributed.cfexecutor import ClientExecutor

    class DaskExecutor(ClientExecutor):
        """The executor of a client made for it: ``shutdown`` closes the client too (left open,
        it outlived the cluster and logged CommClosedError at exit), and ``_max_workers`` is
        the cluster's thread count, which sizes the grid's chunks."""

        @property
        def _max_workers(self) -> int:
            return max(1, sum(self._client.nthreads().values()))

        def shutdown(self, wait=True):
            try:
                super().shutdown(wait=wait)
            finally:
                self._client.close()

    try:
        client = Client(address, timeout="20s")
    except OSError as exc:
        raise ConnectionError(
            f"no Dask scheduler answered at {address}; start one (`dask scheduler`, dask-jobqueue) "
            "or use --executor local"
        ) from exc
    return DaskExecutor(client)


def make_executor(executor: str | Executor | None = "local") -> Executor:
    """An executor from its name (see the module docstring) or the executor itself."""
    if isinstance(executor, Executor):
        return executor
    if executor is None or executor == "local":
        return local_executor()
    if not isinstance(executor, str):
        raise TypeError(f"executor must be a name or a concurrent.futures.Executor, got {type(executor).__name__}")
    if executor == "serial":
        return SerialExecutor()
    if executor.startswith("local:"):
        count = executor.split(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"executor {executor!r}: 'local:N' needs a positive number of workers")
        return local_executor(int(count))
    if executor.startswith("dask://"):
        return dask_executor(executor[len("dask://"):])
    raise ValueError(
        f"unknown executor {executor!r}; use 'local', 'local:N', 'serial' or 'dask://HOST:PORT'"
    )
