"""One run trained by several processes under ``torchrun`` (docs/method.md §8).

``torchrun --nproc_per_node N -m ibstudy train ...`` starts N processes that train **one** run: each
global batch (the CPU loader's, cut by the same seeded order) is split into N contiguous slices, every
process computes the gradient of its slice, and the gradients are all-reduced (summed, weighted by
slice size) before every optimizer step, so the update is the one of the whole batch; E2E,
layer-wise, sequential and the other methods alike. The per-epoch plane is measured chunk by chunk,
the chunks split over the processes and gathered; the test batches are dealt out the same way and
their counts summed, and the probes block by block. Only rank 0 writes files and holds the run
folder's lock; the others follow its decisions (resume, reuse, refuse). The backend is ``nccl`` on
GPUs and ``gloo`` on CPUs (so the whole path is tested on a CPU). Several nodes work through
torchrun's rendezvous (``--nnodes``, ``--rdzv-endpoint``). BatchNorm statistics are per process
unless ``sync_bn`` (CUDA only) is set.
"""

from __future__ import annotations

import gc
import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch import distributed as dist

__all__ = ["Dist", "all_reduce_grads", "current", "setup", "shutdown"]


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun group."""

    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        """True on rank 0 (the process that writes)."""
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait for every rank."""
        dist.barrier()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sums over the ranks."""
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def shard(self, n: int) -> slice:
        """This rank's contiguous slice of a batch of ``n`` samples (sizes differ by at most one)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))


def current() -> Dist | None:
    """The process group this process belongs to (None when not launched by torchrun with N > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(identity: dict[str, Any], device_type: str) -> Dist | None:
    """Join the torchrun group (nccl on CUDA, gloo otherwise) and check that every process was given
    the same config: a ValueError on every rank names the first field that differs."""
    info = current()
    if info is None:
        return None
    if device_type == "cuda":  # before any collective: nccl puts each rank's buffers on this GPU
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    mine = json.dumps(identity, sort_keys=True)
    reference = json.loads(info.broadcast(mine))
    diffs = [
        k for k in sorted(set(reference) | set(identity)) if reference.get(k) != identity.get(k)
    ]
    verdicts = info.gather(diffs)
    bad = [(r, d) for r, d in enumerate(verdicts) if d]
    if bad:
        rank, fields = bad[0]
        raise ValueError(
            f"the torchrun processes disagree on the config: rank {rank} has a different "
            f"{fields[0]!r} than rank 0 (fields that differ: {fields}); start every process with "
            f"the same options"
        )
    return info


def shutdown(*, together: bool = False) -> None:
    """Leave the process group (if joined): a process that exits inside one aborts (gloo).
    ``together`` (a run that ended on every rank) first waits at a barrier, so no rank tears its
    connections down while another still works. The group's objects are then collected while the
    interpreter runs: left to the exit, a C++ thread of theirs was sometimes destroyed unjoined
    ("terminate called without an active exception", SIGABRT; 3 of 20 runs of two spawn tests
    here, 0 of 40 with the collection)."""
    if dist.is_available() and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()
        gc.collect()


def all_reduce_grads(params: list[torch.nn.Parameter], loss: Tensor, info: Dist) -> float:
    """Sum every parameter's gradient (and the weighted loss) over the ranks in one flat buffer, in
    place; returns the summed loss (a NaN on any rank makes it NaN on all, so all stop together)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).to(grads[0].dtype)])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        if p.grad is None:
            p.grad = flat[offset : offset + n].view_as(p).clone()
        else:
            p.grad.copy_(flat[offset : offset + n].view_as(p))
        offset += n
    return float(flat[-1])
