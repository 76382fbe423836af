"""One function over many items (cases), in worker processes, with a progress bar.

Every stage that works case by case (``synth``, ``index``, ``preprocess``,
``evaluate``) runs through :func:`parallel_map`, so they share one behaviour:

* ``workers=1`` (or a single item) runs inline, in this process: no pool, and
  errors keep their own traceback;
* worker processes are started with ``spawn``, not ``fork``: the parent may
  hold threads (tqdm's monitor, BLAS pools, MLflow) whose locks a forked child
  would inherit in a locked state;
* the first error stops the run: items not yet handed to a worker are
  cancelled, and the error names the item it came from;
* results come back in item order, whatever the worker count.

``fn`` must be picklable for ``workers > 1``: a module-level function or a
:func:`functools.partial` of one. Stages that want every item attempted (index,
preprocess) catch their per-case errors inside ``fn`` and return them as values.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

from brainmets.errors import BrainmetsError

Item = TypeVar("Item")
Result = TypeVar("Result")


def parallel_map(
    fn: Callable[[Item], Result],
    items: Sequence[Item],
    *,
    workers: int = 1,
    desc: str,
    unit: str = "case",
    progress: bool = True,
    name: Callable[[Item], str] = str,
) -> list[Result]:
    """``[fn(item) for item in items]`` in up to ``workers`` processes, with a tqdm bar.

    ``desc`` and ``unit`` label the bar; ``name(item)`` names an item in errors.
    On the first failure the remaining items are cancelled (those already
    running finish) and the error is raised: a :class:`BrainmetsError` as is
    when its message names the item, else prefixed with the item's name; any
    other exception as a ``RuntimeError`` naming the item, chained to the
    original (whose traceback, from the worker, is kept).
    """
    from tqdm.auto import tqdm

    if workers < 1:
        raise BrainmetsError(f"workers must be at least 1, got {workers}")
    items = list(items)
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress)
    try:
        if workers == 1 or len(items) <= 1:
            return _run_inline(fn, items, bar, desc, name)
        return _run_pool(fn, items, min(workers, len(items)), bar, desc, name)
    finally:
        bar.close()


def _run_inline(fn, items, bar, desc, name) -> list:
    results = []
    for item in items:
        try:
            results.append(fn(item))
        except Exception as exc:
            _raise_naming_item(exc, name(item), desc)
        bar.update()
    return results


def _run_pool(fn, items, workers, bar, desc, name) -> list:
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                bar.update(len(done))
                if any(future.exception() is not None for future in done):
                    break
        finally:
            # On an error or an interrupt: drop the items not started; running ones finish
            # (their writes are atomic), so the report below sees every item that failed.
            pool.shutdown(wait=True, cancel_futures=True)
    for item, future in zip(items, futures):
        # The earliest failed item in input order, whichever worker noticed first.
        if not future.cancelled() and future.exception() is not None:
            _raise_naming_item(future.exception(), name(item), desc)
    return [future.result() for future in futures]


def _raise_naming_item(exc: BaseException, item: str, desc: str) -> None:
    if isinstance(exc, BrainmetsError):
        if item in str(exc):
            raise exc
        raise BrainmetsError(f"{item}: {exc}") from exc
    raise RuntimeError(f"{desc} failed on {item}: {type(exc).__name__}: {exc}") from exc
