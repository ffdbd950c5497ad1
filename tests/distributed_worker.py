"""Worker of the 2-process tests, started by `torch.distributed.run` with 2 processes.

Each process takes its half of the global batch, runs a tiny SISTA (gloo) wrapped by DDP or, with
`case["strategy"] == "fsdp2"`, sharded by FSDP2 through accelerate's `fsdp2_prepare_model`, and rank 0 writes the
averaged loss and the synchronised (for FSDP2: gathered full) gradients for the test to compare with one process
holding the whole batch. With `case["compile_gather"]`, rank 0 also writes the global batch gathered by
`gather_global_batch` eagerly and compiled with `fullgraph=True`, with the gradients each reaches; with
`case["check_uneven_batch"]`, the error that a gather of 2 samples against 3 raises first.
"""

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_model
from torch.distributed.fsdp import MixedPrecisionPolicy
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

# run as a script, so its own folder (tests/) is first on the import path
from conftest import tiny_sista_config, without_dropout
from modeling_sista import SistaModel, gather_global_batch


def shard_with_fsdp2(model: torch.nn.Module, rank: int) -> torch.nn.Module:
    """The calls `accelerate launch` makes for `examples/accelerate_configs/fsdp.yaml`, gradients reduced in fp32."""
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=["ViTLayer", "BertLayer"],
        reshard_after_forward=True,
        mixed_precision_policy=MixedPrecisionPolicy(reduce_dtype=torch.float32),
    )
    # accelerate maps FSDP on CPU to plain multi-CPU training, so its Accelerator cannot be used here; these are the
    # only attributes `fsdp2_prepare_model` reads
    accelerator = SimpleNamespace(
        state=SimpleNamespace(fsdp_plugin=plugin), mixed_precision="no", is_main_process=rank == 0, device="cpu"
    )
    return fsdp2_prepare_model(accelerator, model)


def full_gradient(parameter: torch.nn.Parameter) -> torch.Tensor:
    grad = parameter.grad
    return grad.full_tensor() if isinstance(grad, DTensor) else grad


def gather_eager_and_compiled(rank: int) -> dict:
    """The global batch and the gradients of a fixed function of it, gathered eagerly and compiled."""
    compiled_gather = torch.compile(gather_global_batch, fullgraph=True)
    results = {}
    for name, gather in (("eager", gather_global_batch), ("compiled", compiled_gather)):
        generator = torch.Generator().manual_seed(rank)
        image_embeds = torch.randn(3, 4, generator=generator, requires_grad=True)
        text_embeds = torch.randn(3, 4, generator=generator, requires_grad=True)
        report_embeds = torch.randn(3, 5, generator=generator)
        all_image_embeds, all_text_embeds, all_report_embeds, row_offset = gather(
            image_embeds, text_embeds, report_embeds
        )
        weights = torch.arange(all_image_embeds.numel(), dtype=torch.float32).reshape(all_image_embeds.shape)
        ((all_image_embeds * weights).sum() + (all_text_embeds**2).sum()).backward()
        results[name] = {
            "image": all_image_embeds.detach().clone(),
            "text": all_text_embeds.detach().clone(),
            "report": all_report_embeds.clone(),
            "row_offset": row_offset,
            "image_grad": image_embeds.grad,
            "text_grad": text_embeds.grad,
        }
    return results


def main(work_dir: Path):
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    case = torch.load(work_dir / "case.pt")
    torch.manual_seed(0)
    model = without_dropout(SistaModel(tiny_sista_config(**case["config_kwargs"])).train())
    uneven_batch_error = None
    if case.get("check_uneven_batch"):
        try:
            gather_global_batch(torch.zeros(2 + rank, 4), torch.zeros(2 + rank, 4), None)
        except ValueError as error:
            uneven_batch_error = str(error)
    if case.get("strategy", "ddp") == "fsdp2":
        wrapped_model = shard_with_fsdp2(model, rank)
        unsharded = [name for name, parameter in model.named_parameters() if not isinstance(parameter, DTensor)]
        assert not unsharded, f"FSDP2 left parameters unsharded: {unsharded}"
    else:
        wrapped_model = DistributedDataParallel(model, find_unused_parameters=False)

    local_size = case["batch"]["input_ids"].shape[0] // world_size
    local_batch = {key: value[rank * local_size : (rank + 1) * local_size] for key, value in case["batch"].items()}
    outputs = wrapped_model(**local_batch, return_loss=True)
    outputs.loss.backward()  # DDP and FSDP2 average the gradients over processes

    losses = torch.stack([outputs.loss.detach(), outputs.loss_sia.detach()])
    dist.all_reduce(losses)
    losses /= world_size
    grads = {name: full_gradient(parameter) for name, parameter in model.named_parameters()}
    results = {"loss": losses[0], "loss_sia": losses[1], "grads": grads, "uneven_batch_error": uneven_batch_error}
    if case.get("compile_gather"):
        results["gather"] = gather_eager_and_compiled(rank)
    if rank == 0:
        torch.save(results, work_dir / "distributed.pt")
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    # gloo can abort at interpreter exit after the work is done; leave without running its destructors
    os._exit(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
