"""More than one process: ``torchrun`` and ``torch.distributed`` (gloo on CPU, NCCL on GPUs).

Every command that reads ``WORLD_SIZE`` > 1 from torchrun's environment joins the process group
(:func:`start`) and then:

- training: every rank runs the same session-parallel schedule of B slots (the GRU step of all B
  slots is replicated: it is small, and it keeps the slot schedule, the dropout masks and the
  shared negatives exactly the single process's), and rank r computes the head and the loss of its
  share of the rows, the work that grows with the catalogue. The gradients are summed across ranks
  (:func:`sum_gradients`): dense ones with an all-reduce, the item rows' sparse ones by an all-reduce
  of their values, since every rank's sparse gradient has the same row list (the batch's inputs,
  targets and shared negatives) in the same order. Every rank then applies the same Adagrad update
  to the same rows, so the weights stay identical without a broadcast;
- evaluation: every rank replays the held-out sessions in the same blocks, and chunk c of the
  replay is scored by rank c mod W (:func:`owner`); the per-event columns and every observer's
  per-chunk numbers are gathered (:func:`gather_objects`) and put back in chunk order, so the
  numbers are the single process's, bit for bit;
- the rank report (analysis.sharded): each block of log-probabilities is computed in whole row
  tiles, a contiguous run of them per rank, and all-gathered (:func:`share_tiles`): every rank
  then holds the block one process computes, bit for bit. The Gram matrix's row panels are shared
  out (:func:`panel_owner`), each computed by one rank alone, and summed (:func:`sum_array`):
  adding the other ranks' zeros is exact. An expressive sweep's fits (one per r) are shared out
  the same way and gathered.

Rank 0 alone prints, draws progress bars and writes files.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist

from .cli import launched  # torch-free, so that commands can ask before importing torch

TIMEOUT = datetime.timedelta(minutes=30)  # a collective that waits longer than this has lost a peer


def start(device: torch.device | str) -> None:
    """Join torchrun's process group (NCCL for CUDA, gloo otherwise) when launched by it; else nothing."""
    if not launched() or dist.is_initialized():
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)


def stop(synchronise: bool = True) -> None:
    """Leave the process group. After a command that went well, every rank first waits for the others at a
    barrier (which also waits for this rank's earlier collectives), so that no rank tears the group down
    and exits while a peer's last collective is still in flight: a rank that exited so was seen to die
    with SIGABRT ("terminate called without an active exception") in about 1 run in 10. After a failure
    the peers may be gone, so there is no barrier."""
    if not dist.is_initialized():
        return
    if synchronise:
        dist.barrier()
    dist.destroy_process_group()


class Stopped(KeyboardInterrupt):
    """This rank was ended because another rank of the job failed (torchrun's SIGTERM, or a collective whose
    peer is gone); the commands' Ctrl-C path turns it into one line naming the rank and what was kept."""


def _terminated(signum, frame):
    raise Stopped(f"rank {rank()} stopped: another rank of the job failed, and torchrun ended the others")


@contextlib.contextmanager
def session(device: torch.device | str):
    """Join torchrun's process group for the body of a command, and leave it after; outside torchrun, nothing.

    A rank that dies makes torchrun end the others (SIGTERM); each of them then stops with one line naming
    its rank, as after a Ctrl-C, so that what was written (rank 0's last whole checkpoint) is said."""
    if not launched():
        yield
        return
    start(device)
    if is_main():
        print(f"torchrun: {world_size()} process(es) in the group ({dist.get_backend()})", file=sys.stderr, flush=True)
    previous = signal.signal(signal.SIGTERM, _terminated)
    went_well = False
    try:
        yield
        went_well = True
    except Stopped:
        raise
    except RuntimeError as err:  # gloo/NCCL: a collective's peer is gone (the connection closed or timed out)
        if isinstance(err, getattr(dist, "DistBackendError", ())) or "onnection" in str(err):
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise Stopped(f"rank {rank()} stopped: another rank of the job is gone ({first[:160]})") from err
        raise
    finally:
        # after a failure, torchrun's SIGTERM (it ends the others once one rank is gone) must not cut this rank
        # short before it has said why it stopped: it is ignored while the rank leaves the group and exits
        signal.signal(signal.SIGTERM, previous if went_well else signal.SIG_IGN)
        stop(synchronise=went_well)


def active() -> bool:
    """Whether this process is one rank of a torchrun job (world size 1 included)."""
    return dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process prints and writes (rank 0, or the only process)."""
    return rank() == 0


def owner(chunk: int) -> int:
    """The rank that scores chunk `chunk` of an evaluation."""
    return chunk % world_size()


def rows_of_rank(n_rows: int) -> slice:
    """This rank's contiguous share of a training batch's n_rows rows (the first ranks take one more)."""
    size, me = world_size(), rank()
    base, extra = divmod(n_rows, size)
    first = me * base + min(me, extra)
    return slice(first, first + base + (me < extra))


def gather_objects(value) -> list:
    """Every rank's `value`, in rank order, on every rank (pickled through the process group)."""
    if not dist.is_initialized():  # under torchrun even at world size 1 (the GPU check runs NCCL so)
        return [value]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def sum_gradients(parameters) -> None:
    """Sum every parameter's gradient over the ranks, in place (see the module docstring)."""
    if not dist.is_initialized():
        return
    for param in parameters:
        grad = param.grad
        if grad is None:
            continue
        if grad.is_sparse:
            values = grad._values()  # the same row list on every rank: summing the values sums the gradients
            dist.all_reduce(values)
        else:
            dist.all_reduce(grad)


def _on_backend(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor where the group's backend can send it (NCCL: the GPU)."""
    return tensor.cuda() if dist.get_backend() == "nccl" else tensor


def share_tiles(length: int, tile: int, compute, axis: int = 0) -> np.ndarray:
    """The float64 array whose entries first:last along `axis` `compute(first, last)` returns, on every rank.

    Under torchrun 0:length is cut into tiles of `tile` (the last may be shorter) and each rank computes
    one contiguous run of whole tiles; the runs are all-gathered. A computation that works tile by tile
    from its `first` (analysis.logprobs) so gives every rank the single process's bits."""
    if not dist.is_initialized() or world_size() == 1:
        return compute(0, length)
    n_tiles, size = -(-length // tile), world_size()
    bounds = [min(length, tile * (n_tiles * r // size)) for r in range(size + 1)]  # run r: bounds[r]:bounds[r+1]
    mine = np.moveaxis(np.asarray(compute(bounds[rank()], bounds[rank() + 1]), dtype=np.float64), axis, 0)
    longest = max(b - a for a, b in zip(bounds, bounds[1:]))
    padded = torch.zeros((longest, *mine.shape[1:]), dtype=torch.float64)
    padded[:len(mine)] = torch.from_numpy(np.ascontiguousarray(mine))
    parts = [_on_backend(torch.empty_like(padded)) for _ in range(size)]
    dist.all_gather(parts, _on_backend(padded))
    whole = np.concatenate([part[:b - a].cpu().numpy() for part, a, b in zip(parts, bounds, bounds[1:])])
    return np.ascontiguousarray(np.moveaxis(whole, 0, axis))


def panel_owner(panel: int) -> int:
    """The rank that computes row panel `panel` of an upper-triangular product (panels shrink down the
    diagonal, so they are dealt out back and forth: 0, 1, 1, 0, 0, 1, … at world size 2)."""
    size = world_size()
    turn, place = divmod(panel, size)
    return place if turn % 2 == 0 else size - 1 - place


def sum_array(array: np.ndarray) -> None:
    """A float64 array summed over the ranks, in place (exact where every entry is non-zero on one rank only)."""
    if not dist.is_initialized() or world_size() == 1:
        return
    tensor = _on_backend(torch.from_numpy(array))
    dist.all_reduce(tensor)
    if tensor.device.type != "cpu":
        array[...] = tensor.cpu().numpy()


def sum_scalar(value: float) -> float:
    """A Python number summed over the ranks (float64)."""
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(tensor)
    return float(tensor)


def interleave(states: list[list], owners: list[int]) -> list:
    """Per-chunk records gathered from every rank (each rank's in its chunks' order) put back in chunk order."""
    positions = [0] * len(states)
    merged = []
    for who in owners:
        merged.append(states[who][positions[who]])
        positions[who] += 1
    return merged
