"""The engine's own data loader: TopDownBatchBuilder batches built in torch.utils.data worker processes.

The trainer plans each epoch (which samples make up each global batch, as libs/data's PoseDataLoader orders
them) and this process builds only its replica blocks of each batch, so every DDP rank loads its own share
and the batches are the ones the TypeScript loader would have built, whatever the number of workers.

    loader = EngineDataLoader(config, workers=2, prefetch=2, blocks=[rank], block_size=batch_size // replicas)
    loader.start(epoch, [(index, samples) for index, samples in enumerate(plan)])
    for index, _ in enumerate(plan):
        batch = loader.next(epoch, index)       # images [n, 3, H, W], targets [n, K, h, w], target_weights [n, K]
    loader.close()
"""
from __future__ import annotations

import collections
import multiprocessing
import weakref
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.utils.data

from .batch import Batch, TopDownBatchBuilder
from .images import DataError

# Workers are started with "spawn", not "fork": after the engine has trained, this process has run OpenMP
# parallel regions, and a forked child inherits libgomp's thread-pool state without its threads, so a parallel
# region in the child (torch ops, some numpy paths) can hang; it would also inherit any CUDA context, which
# cannot be used after a fork. A spawned worker is a fresh interpreter that imports what it needs, so the
# process that makes a loader must be importable without side effects (the `if __name__ == "__main__"` idiom,
# as poseloop_torch/__main__.py has). Measured on 2 cores: 1.5-1.9 s from `start` to the first batch with 1 or
# 2 workers (fork: 0.3 s; forkserver: 1.6 s and a server process left behind), almost all of it importing
# torch; persistent workers pay it once per loader, not once per epoch.
START_METHOD = "spawn"

Key = tuple[int, int, tuple[int, ...]]


@dataclass(frozen=True)
class _Failure:
    """A DataError raised in a worker, carried back as a value: torch re-raises worker exceptions by calling
    their class with one formatted string, which would lose DataError's code."""

    code: str
    message: str


@dataclass(frozen=True)
class _Shared:
    """A batch built by a worker into its shared-memory ring (see _BlockDataset._shared_buffers)."""

    epoch: int
    index: int
    samples: np.ndarray
    images: torch.Tensor
    targets: torch.Tensor
    target_weights: torch.Tensor
    skipped: list[dict[str, Any]]


def _identity(item: Any) -> Any:
    return item


def _init_worker(worker_id: int) -> None:
    # Parallelism comes from the workers themselves; intra-op threads in each would oversubscribe the cores.
    torch.set_num_threads(1)


class _BlockDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Builds this process's blocks of one planned batch; the builder is made in the process that uses it."""

    def __init__(self, config: dict[str, Any], blocks: Sequence[int], block_size: int, prefetch: int) -> None:
        self.config = config
        self.blocks = list(blocks)
        self.block_size = block_size
        self.prefetch = prefetch
        self._builder: TopDownBatchBuilder | None = None
        self._rings: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        self._built: dict[int, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "blocks": self.blocks, "block_size": self.block_size, "prefetch": self.prefetch}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], state["blocks"], state["block_size"], state["prefetch"])  # type: ignore[misc]

    def _shared_buffers(self, builder: TopDownBatchBuilder, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next slot of this worker's ring of shared-memory batches of `size` samples.

        Fresh shared memory for every batch costs about as much as building the batch (every page faults in
        tmpfs), so a worker reuses prefetch + 2 buffers in turn. None is written while its batch may be unread:
        the DataLoader hands out tasks to the workers in turn and sends a new one only when it returns a batch,
        keeping at most prefetch x workers tasks ahead of it, so when a worker starts a batch its last `prefetch`
        batches at most are unread (the oldest perhaps being copied out by `next` right then); `next` copies
        every batch before it returns.
        """
        ring = self._rings.setdefault(size, [])
        built = self._built.get(size, 0)
        self._built[size] = built + 1
        slot = built % (self.prefetch + 2)
        if slot == len(ring):
            width, height = builder.input_size
            k = builder.codec.num_keypoints
            shapes = ((size, 3, height, width), (size, *builder.codec.target_shape[0]), (size, k))
            ring.append(tuple(torch.empty(shape, dtype=torch.float32).share_memory_() for shape in shapes))  # type: ignore[arg-type]
        return ring[slot]

    def __getitem__(self, key: Key) -> Batch | _Shared | _Failure:
        epoch, index, samples = key
        if self._builder is None:
            self._builder = TopDownBatchBuilder(self.config)
        mine = [s for block in self.blocks for s in samples[block * self.block_size:(block + 1) * self.block_size]]
        in_worker = torch.utils.data.get_worker_info() is not None
        shared = self._shared_buffers(self._builder, len(mine)) if in_worker else None
        try:
            batch = self._builder.build(epoch, index, mine, None if shared is None else tuple(t.numpy() for t in shared))  # type: ignore[arg-type]
        except DataError as error:
            return _Failure(error.code, error.message)
        if shared is None:
            return batch
        # Shared tensors travel as file descriptors; the arrays would be pickled through a pipe.
        return _Shared(epoch, index, batch.samples, *shared, batch.skipped)


class _PlanSampler(torch.utils.data.Sampler):  # type: ignore[type-arg]
    """The keys of the current plan; `start` replaces the plan, and each new iteration reads the new one."""

    def __init__(self) -> None:
        self.plan: list[Key] = []

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self.plan))

    def __len__(self) -> int:
        return len(self.plan)


class _Workers:
    """What must be stopped when the loader is closed or collected: the iterator that owns the processes."""

    def __init__(self) -> None:
        self.iterator: Any = None

    def stop(self) -> None:
        iterator, self.iterator = self.iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


class EngineDataLoader:
    """Batches of one process's replica blocks, built by `workers` worker processes (0: in this process).

    `config` is libs/data's BatchBuilderConfig as JSON (image paths absolute). Each planned global batch is
    `block_size` samples per replica; this process takes blocks `blocks` of each, concatenated in that order.
    Batches come out strictly in plan order, up to `workers * prefetch` of them built ahead. A bad sample under
    the "fail" policy raises DataError (its code and message as the TypeScript loader's) from `next`.
    """

    def __init__(self, config: dict[str, Any], workers: int, prefetch: int, blocks: list[int], block_size: int) -> None:
        problems = []
        if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= 64:
            problems.append(f"workers must be an integer from 0 to 64, got {workers!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 1 <= prefetch <= 16:
            problems.append(f"prefetch must be an integer from 1 to 16, got {prefetch!r}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            problems.append(f"block_size must be a positive integer, got {block_size!r}")
        if not blocks or any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in blocks) or len(set(blocks)) != len(blocks):
            problems.append(f"blocks must be distinct integers >= 0, got {blocks!r}")
        if problems:
            raise ValueError("; ".join(problems))
        # Fails here, in the caller's process, on a config no worker could build from.
        builder = TopDownBatchBuilder(config)
        config = {**config, "table": builder.table.packed()}
        self.workers = workers
        self.blocks = list(blocks)
        self.block_size = block_size
        self._sampler = _PlanSampler()
        options: dict[str, Any] = {}
        if workers > 0:
            options = {"prefetch_factor": prefetch, "persistent_workers": True,
                       "multiprocessing_context": multiprocessing.get_context(START_METHOD)}
        self._loader = torch.utils.data.DataLoader(
            _BlockDataset(config, blocks, block_size, prefetch), batch_size=None, sampler=self._sampler,
            num_workers=workers, collate_fn=_identity, worker_init_fn=_init_worker, **options)
        # The workers' ring buffers as this process last received them: while a buffer's storage is alive here,
        # torch maps the same shared memory again from its cache instead of mapping (and faulting in) new pages
        # for every batch, which made copying a batch out 20 times slower.
        self._received: collections.deque[_Shared] = collections.deque(maxlen=max(1, workers) * (prefetch + 2))
        self._workers = _Workers()
        self._finalizer = weakref.finalize(self, self._workers.stop)
        self._position = 0
        self._closed = False

    def start(self, epoch: int, batches: Sequence[tuple[int, Sequence[int]]]) -> None:
        """Plans `batches` (index, global sample indices) of `epoch` and starts building them; batches still
        pending from an earlier plan are dropped."""
        if self._closed:
            raise ValueError("the data loader is closed")
        needed = (max(self.blocks) + 1) * self.block_size
        plan: list[Key] = []
        for index, samples in batches:
            if len(samples) < needed:
                raise ValueError(f"batch {index} of epoch {epoch} has {len(samples)} samples, blocks {self.blocks} of {self.block_size} need {needed}")
            plan.append((int(epoch), int(index), tuple(int(s) for s in samples)))
        self._sampler.plan = plan
        self._position = 0
        # With persistent workers a new iteration reuses the processes and reads the sampler's new plan.
        self._workers.iterator = iter(self._loader)

    def next(self, epoch: int, index: int) -> Batch:
        """The next planned batch, which must be (epoch, index); ValueError otherwise."""
        plan = self._sampler.plan
        if self._workers.iterator is None or self._position >= len(plan):
            raise ValueError(f"batch {index} of epoch {epoch} is not planned: no planned batch is left")
        planned_epoch, planned_index, _ = plan[self._position]
        if (planned_epoch, planned_index) != (epoch, index):
            raise ValueError(f"batch {index} of epoch {epoch} is not the next planned one (batch {planned_index} of epoch {planned_epoch})")
        self._position += 1
        item = next(self._workers.iterator)
        if isinstance(item, _Failure):
            raise DataError(item.code, item.message)
        if isinstance(item, _Shared):
            self._received.append(item)
            # A copy: the worker writes this slot again a few batches later.
            return Batch(epoch=item.epoch, index=item.index, samples=item.samples, images=item.images.numpy().copy(),
                         targets=item.targets.numpy().copy(), target_weights=item.target_weights.numpy().copy(),
                         skipped=item.skipped)
        return item

    def close(self) -> None:
        """Stops the worker processes; safe to call twice."""
        self._closed = True
        self._sampler.plan = []
        self._received.clear()
        self._finalizer()

    def __enter__(self) -> EngineDataLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
