"""Run many independent tasks (a photo, a photo under a prior) in this process or across a Ray cluster.

A *worker* is a class whose constructor loads what every task needs once (the
model, the priors) and whose ``run(task)`` does one task, writes its outputs
itself (atomically) and returns a small, picklable result. :func:`run` yields
``(task, result)`` as tasks finish: here, in order, with one worker; on Ray
(optional: ``pip install iqa-map[ray]``), with a pool of worker actors, each
holding at most two tasks at a time so the driver's memory stays flat in the
number of tasks, and a worker lost mid-task is restarted and its task retried.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional

RAY_INSTALL = "pip install 'iqa-map[ray]' (or pip install ray)"


def run(worker_cls, worker_kwargs: dict, tasks: Iterable[Any], *, ray_address: Optional[str] = None,
        workers: int = 1, gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, retries: int = 3,
        local_worker: Optional[Callable[[], Any]] = None) -> Iterator[tuple[Any, Any]]:
    """``(task, worker.run(task))`` for every task. ``ray_address``: ``None`` runs here; ``"local"`` starts a
    local Ray cluster (on 127.0.0.1); anything else is an existing cluster's address (``ray://host:10001`` or
    ``host:6379``). ``local_worker`` builds the in-process worker (default ``worker_cls(**worker_kwargs)``)."""
    if ray_address is None:
        worker = local_worker() if local_worker is not None else worker_cls(**worker_kwargs)
        for task in tasks:
            yield task, worker.run(task)
        return
    yield from _run_ray(worker_cls, worker_kwargs, iter(tasks), ray_address, workers, gpus_per_worker,
                        cpus_per_worker, retries)


def import_ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError(f"--ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


def connect(address: str, num_cpus: Optional[int] = None):
    """Ray, initialised: a new local cluster for ``"local"`` (listening on 127.0.0.1 only), else the cluster at
    ``address``."""
    ray = import_ray()
    if not ray.is_initialized():
        kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address == "local":
            ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1", **kw)
        else:
            ray.init(address=address, **kw)
    return ray


def _run_ray(worker_cls, worker_kwargs, tasks: Iterator, address, workers, gpus, cpus, retries):
    ray = connect(address, num_cpus=max(int(workers * cpus), 1) if address == "local" else None)
    actor_cls = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=-1, max_task_retries=retries)(worker_cls)
    actors = [actor_cls.remote(**worker_kwargs) for _ in range(max(int(workers), 1))]
    pending: dict = {}

    def submit(actor) -> None:
        task = next(tasks, None)
        if task is not None:
            pending[actor.run.remote(task)] = (task, actor)

    for actor in actors:
        for _ in range(2):
            submit(actor)
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            task, actor = pending.pop(ref)
            yield task, ray.get(ref)
            submit(actor)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        for actor in actors:
            ray.kill(actor)

