"""Worker of `test_two_process_sia_equals_one_process`, started by `torch.distributed.run` with 2 processes.

Each process takes its half of the global batch, runs a DDP-wrapped tiny SISTA (gloo) and rank 0 writes the
averaged loss and the synchronised gradients for the test to compare with one process holding the whole batch.
"""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

# run as a script, so its own folder (tests/) is first on the import path
from conftest import tiny_sista_config
from modeling_sista import SistaModel


def main(work_dir: Path):
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    case = torch.load(work_dir / "case.pt")
    torch.manual_seed(0)
    model = SistaModel(tiny_sista_config(**case["config_kwargs"])).train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ddp_model = DistributedDataParallel(model, find_unused_parameters=False)

    local_size = case["batch"]["input_ids"].shape[0] // world_size
    local_batch = {key: value[rank * local_size : (rank + 1) * local_size] for key, value in case["batch"].items()}
    outputs = ddp_model(**local_batch, return_loss=True)
    outputs.loss.backward()  # DDP averages the gradients over processes

    losses = torch.stack([outputs.loss.detach(), outputs.loss_sia.detach()])
    dist.all_reduce(losses)
    losses /= world_size
    if rank == 0:
        grads = {name: parameter.grad for name, parameter in model.named_parameters()}
        torch.save({"loss": losses[0], "loss_sia": losses[1], "grads": grads}, work_dir / "distributed.pt")
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    # gloo can abort at interpreter exit after the work is done; leave without running its destructors
    os._exit(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
