"""Run a test's worker function on several gloo processes and collect what each rank saved."""
from __future__ import annotations

import socket
from pathlib import Path

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(worker, out: Path, world: int) -> list:
    """``worker(rank, port, out)`` on ``world`` spawned processes; each saves ``out/rank<r>.pt``."""
    import torch.multiprocessing as mp

    mp.start_processes(worker, args=(free_port(), str(out)), nprocs=world, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]
