"""Where a study's runs train: ``EXECUTORS = {"local": ..., "dask": ...}``.

An executor takes job specs (``sweep.job_spec``: plain data) and yields the workers'
small reports (``sweep.train_job``) as runs finish; it never sees a run's results, which
the workers write into their own run folders. ``poll()`` is called about twice a second
while runs train (the study's progress bar reads the run store then).

- ``local``: worker processes (``concurrent.futures.ProcessPoolExecutor``, the ``spawn``
  context: no forked torch state), ``min(cores, runs)`` of them (cores: this process's CPU
  affinity) unless ``workers`` says,
  each with ``cores // workers`` torch threads so workers x threads stays within the
  cores. Never threads: torch's global state is per process. With one worker the runs
  train in this process, one after another; so does a study too small to repay starting the
  workers (``LocalExecutor.expect``), at the workers' thread count.
- ``dask``: an existing cluster (``scheduler="tcp://HOST:8786"``) or, without an address,
  a ``distributed.LocalCluster`` of 2 single-threaded worker processes. Needs the
  ``cluster`` extra. Every worker must see the run store at the same path (a shared
  filesystem on a cluster). On HPC, start the scheduler and workers with dask-jobqueue
  (``SLURMCluster(...).scale(n)``) and pass its ``scheduler_address``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from .errors import UserError
from .sweep import as_reports, failed_reports, train_job

INSTALL_CLUSTER = "install the cluster extra: pip install 'teacherstudent[cluster]'"
CONNECT_TIMEOUT_S = 5
POLL_S = 0.5
WORKER_START_S = 1.5  # spawning a worker and importing torch and this package (2 at once on 2 cores: 1.5 s, 2026-12-07)


def cluster_module():
    """``distributed``, from the optional ``cluster`` extra (imported by name: it is no dependency of
    the package, and only this executor needs it); missing: the one line saying how to install it."""
    import importlib

    try:
        return importlib.import_module("distributed")
    except ImportError:
        raise UserError(INSTALL_CLUSTER) from None


def _drain(futures: dict[Any, dict[str, Any]], poll: Callable[[], None],
           wait: Callable[[list, float], None]) -> Iterator[dict[str, Any]]:
    """Reports of ``futures`` (future -> spec) as they complete; a lost worker fails only its run.
    ``wait(futures, timeout)`` returns when one of them is done or after ``timeout`` seconds."""
    pending = dict(futures)
    while pending:
        done = [f for f in pending if f.done()]
        if not done:
            poll()
            wait(list(pending), POLL_S)
            continue
        for f in done:
            spec = pending.pop(f)
            try:
                reports = as_reports(f.result())
            except Exception as err:  # noqa: BLE001  (a worker process died: out of memory, killed, ...)
                reports = failed_reports(spec, f"worker lost ({type(err).__name__}: {' '.join(str(err).split())})")
            yield from reports


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under taskset or a batch
    scheduler's cgroup), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _wait_local(futures: list, timeout: float) -> None:
    from concurrent.futures import FIRST_COMPLETED, wait

    wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)


def _wait_dask(futures: list, timeout: float) -> None:
    distributed = cluster_module()
    try:
        distributed.wait(futures, timeout=timeout, return_when="FIRST_COMPLETED")
    except TimeoutError:  # none done within the timeout (distributed raises it, as builtins.TimeoutError)
        pass


class LocalExecutor:
    """Worker processes on this machine (see the module docstring)."""

    name = "local"

    def __init__(self, workers: int | None = None, scheduler: str | None = None, cores: int | None = None):
        # workers >= 1 and no scheduler: checked with the rest of the study's options (experiments.StudyOptions)
        self.requested = workers
        self.cores = cores or available_cores()
        self.inline: tuple[float, int] | None = None  # (estimated seconds, threads): a small study trains here

    def expect(self, n_runs: int, seconds: float | None) -> None:
        """Told how long the study's runs would take in one process (``sweep.inprocess_seconds``),
        decide where they train. With ``workers`` left open, a study that would take less than
        starting the workers saves (``seconds < WORKER_START_S * w / (w - 1)``) trains in this
        process, at the thread count each worker would have had, so its numbers are those the
        workers would have computed; ``--workers N`` always starts N."""
        self.inline = None
        w, threads = self.plan(n_runs)
        if self.requested is None and w > 1 and seconds is not None and seconds < WORKER_START_S * w / (w - 1):
            self.inline = (seconds, threads)

    def plan(self, n_runs: int) -> tuple[int, int]:
        """``(workers, threads per worker)`` for ``n_runs`` runs (a small study: ``(1, threads)``)."""
        if self.inline is not None:
            return 1, self.inline[1]
        workers = max(1, min(self.requested or self.cores, n_runs))
        return workers, max(1, self.cores // workers)

    def describe(self, n_runs: int) -> str:
        w, t = self.plan(n_runs)
        if self.inline is not None:
            return (f"local: in this process x {t} thread{'s' if t > 1 else ''} (about {self.inline[0]:.1f} s of "
                    "work, less than starting worker processes)")
        return f"local: {w} worker process{'es' if w > 1 else ''} x {t} thread{'s' if t > 1 else ''}"

    def threads(self, n_runs: int) -> int | None:
        """Torch threads per worker; None with one worker (the runs train in this process, as it is set)."""
        if self.inline is not None:
            return self.inline[1]
        workers, threads = self.plan(n_runs)
        return None if workers == 1 else threads

    def run(self, specs: list[dict[str, Any]], poll: Callable[[], None]) -> Iterator[dict[str, Any]]:
        if not specs:
            return
        workers, threads = self.plan(len(specs))
        if workers == 1:
            import torch

            before = torch.get_num_threads()  # a small study's jobs set the workers' count: put this process's back
            try:
                for spec in specs:
                    yield from as_reports(train_job(spec, on_tick=poll))
                    poll()
            finally:
                if torch.get_num_threads() != before:
                    torch.set_num_threads(before)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(train_job, spec): spec for spec in specs}
            try:
                yield from _drain(futures, poll, _wait_local)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def close(self) -> None:
        pass


class DaskExecutor:
    """A Dask cluster: the one at ``scheduler``, or a LocalCluster of 2 single-threaded processes."""

    name = "dask"

    def __init__(self, workers: int | None = None, scheduler: str | None = None, cores: int | None = None):
        distributed = cluster_module()
        self.cluster = None
        try:
            if scheduler:
                self.client = distributed.Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
            else:
                self.cluster = distributed.LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
                                                        dashboard_address=":0")  # None still binds :8787
                self.client = distributed.Client(self.cluster)
        except (OSError, TimeoutError) as err:
            raise UserError(f"cannot reach the Dask scheduler {scheduler or '(local cluster)'} "
                            f"within {CONNECT_TIMEOUT_S} s ({type(err).__name__}); check the address "
                            "(tcp://HOST:8786) and that the scheduler runs") from None
        except ValueError as err:
            raise UserError(f"bad --scheduler {scheduler!r} ({err}); write it as tcp://HOST:8786") from None

    def describe(self, n_runs: int) -> str:
        info = self.client.scheduler_info()
        ws = info.get("workers", {})
        threads = sum(w.get("nthreads", 1) for w in ws.values())
        return f"dask: {info.get('address', '?')}, {len(ws)} workers, {threads} threads"

    def threads(self, n_runs: int) -> int | None:
        return 1 if self.cluster is not None else None  # None: each worker splits its machine's cores

    def run(self, specs: list[dict[str, Any]], poll: Callable[[], None]) -> Iterator[dict[str, Any]]:
        futures = {self.client.submit(train_job, spec, pure=False, key=f"train-{spec['run_id']}-{time.time_ns()}"): spec
                   for spec in specs}
        try:
            yield from _drain(futures, poll, _wait_dask)
        except BaseException:
            self.client.cancel(list(futures))
            raise

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


EXECUTORS: dict[str, type] = {"local": LocalExecutor, "dask": DaskExecutor}


def make_executor(name: str, workers: int | None = None, scheduler: str | None = None):
    from .registry import lookup

    return lookup(EXECUTORS, "executor", name)(workers=workers, scheduler=scheduler)
