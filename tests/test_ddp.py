"""DistributedDataParallel on CPU: two gloo processes train with SAM and the UA loss (sigma); the ranks'
weights and sigmas stay identical, only rank 0 writes, and the checkpoint loads in one process."""

import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))  # the spawned workers import this module (and helpers)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir):
    import os

    from helpers import batches, make_parts, settings, tiny_cases, validator

    from uu.loop import fit

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model, loss, opt = make_parts(seed=rank)  # different initial weights: DDP broadcasts rank 0's
        cases = tiny_cases(4, seed=0)
        profile = settings(epochs=1, iters_per_epoch=2)
        fit(
            model,
            loss,
            opt,
            batches(cases[:3], seed=1000 * rank),
            profile,
            run_dir=out_dir / "run",
            validate=validator(cases[3:], profile),
        )
        torch.save({"model": model.state_dict(), "loss": loss.state_dict()}, out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_keep_identical_weights(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), tmp_path), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["loss"]["base.sigma"], b["loss"]["base.sigma"])
    assert not torch.equal(a["loss"]["base.sigma"], torch.ones(3))  # sigma did train

    from helpers import make_parts

    from uu.runs import load_checkpoint, read_log

    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")  # plain keys (no "module."): loads in one process
    model, loss, _ = make_parts(seed=5)
    model.load_state_dict(ckpt["model"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, a["model"][key])
    assert len(read_log(tmp_path / "run")) == 1  # one writer


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
