# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
The `Trainer` subclasses: `SistaTrainer` (pre-training; logs `loss_sia` and `loss_sta`, optional gradient cache,
8-bit images normalised on the device, epochs passed to the dataset, fp32 final weights) and `CheckpointTrainer`
(reloads checkpoints through `from_pretrained`), their arguments, and the checks of a checkpoint to resume from.
"""

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import set_seed
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from .dataset import normalize_pixel_values
from .gradient_cache import gradient_cache_backward


logger = logging.getLogger(__name__)

FSDP_SHARDED_CHECKPOINT_PREFIX = "pytorch_model_fsdp"
FINAL_WEIGHT_DTYPES = ("float32", "bfloat16", "float16")


def default_dataloader_workers() -> int:
    """Loader workers per process: none on CPU (they would compete with the model for the cores); with GPUs the
    cores of the node shared among its GPUs, one left for the training process, at most 16 (docs/pretraining.md
    measures what a GPU needs)."""
    if not torch.cuda.is_available():
        return 0
    cores_per_gpu = (os.cpu_count() or 1) // max(torch.cuda.device_count(), 1)
    return max(1, min(16, cores_per_gpu - 1))


@dataclass
class SistaTrainingArguments(TrainingArguments):
    r"""
    `TrainingArguments` with defaults that SISTA pre-training needs, plus `gradient_cache_chunk_size` and
    `final_weights_dtype`.

    * `remove_unused_columns=False`: the dataset yields `report` text for the collator, not model inputs;
    * `ddp_find_unused_parameters=False`: every parameter gets a gradient (the backbones have no pooler);
    * `dataloader_drop_last=True`: global-batch SIA needs the same batch size on every process;
    * `do_train=True`, `do_eval=True` (the end-of-run evaluation, when the data has an evaluation split),
      `report_to="tensorboard"`, `logging_steps=10` (fewer on short runs, see [`DenseLoggingCallback`]),
      `save_strategy="steps"`;
    * `overwrite_output_dir`, the transformers convention that transformers 5 dropped: see [`prepare_output_dir`];
    * `logging_nan_inf_filter=False`: Trainer's filter reads every step's loss on the host;
    * `data_seed=seed`: every process shuffles alike (the processes' global RNGs differ, see `SistaTrainer`);
    * with a GPU: `bf16=True`, loader workers (`default_dataloader_workers`), persistent workers, pinned memory and
      non-blocking host-to-device copies (accelerate's `non_blocking`); on CPU none of these.
    """

    do_train: bool = field(
        default=True, metadata={"help": "Pre-train (the point of the script); False to only evaluate."}
    )
    do_eval: bool = field(
        default=True, metadata={"help": "Evaluate losses and retrieval at the end on the evaluation split, if any."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep False: the collator needs the `report` text."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Every SISTA parameter gets a gradient, so no extra search pass."}
    )
    dataloader_drop_last: bool = field(
        default=True, metadata={"help": "Global-batch SIA needs equal batch sizes on every process."}
    )
    report_to: None | str | list[str] = field(default="tensorboard", metadata={"help": "Logging integrations."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N optimizer steps."})
    dataloader_pin_memory: bool = field(
        default=torch.cuda.is_available(), metadata={"help": "Pinned host memory (only helps with a GPU)."}
    )
    dataloader_num_workers: int = field(
        default_factory=default_dataloader_workers,
        metadata={"help": "Loader worker processes per training process (default: 0 on CPU; with GPUs the node's "
                          "cores per GPU minus one, at most 16; see docs/pretraining.md for how many a GPU needs)."},
    )
    dataloader_persistent_workers: bool | None = field(
        default=None,
        metadata={"help": "Keep the loader workers between epochs (default: whenever there are workers)."},
    )
    bf16: bool = field(
        # is_available() does not create a CUDA context (asking the GPU's bf16 support would, before the process
        # has its device)
        default=torch.cuda.is_available(),
        metadata={"help": "bf16 autocast (default: on where a GPU is present; False on GPUs before Ampere); the "
                          "losses stay fp32."},
    )
    final_weights_dtype: str = field(
        default="float32",
        metadata={"help": "dtype of the final weights in output_dir (DeepSpeed trains bf16 copies: the fp32 master "
                          "weights are saved unless this asks otherwise).", "choices": FINAL_WEIGHT_DTYPES},
    )
    prediction_loss_only: bool = field(
        default=True, metadata={"help": "Evaluation reports the losses; gathering every output would cost memory."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace a previous run in output_dir (its checkpoints, logs and results are deleted); "
                          "without it such a folder is refused unless --resume_from_checkpoint continues that run."},
    )
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={"help": "Replace a NaN/inf step loss in the logged average. Off: the check reads the loss on the "
                          "host every step (a device sync); a NaN loss is logged as NaN."},
    )
    gradient_cache_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Micro-batch size of a gradient cache (GradCache): the loss and gradients of the full "
            "per-device batch with the activation memory of this many samples. None: one pass per batch."
        },
    )

    def __post_init__(self):
        if self.data_seed is None:
            # the shuffling seed, fixed here: accelerate would take it from the global RNG, which differs per process
            # once SistaTrainer seeds each process for its own dropout
            self.data_seed = self.seed
        if self.dataloader_persistent_workers is None:
            self.dataloader_persistent_workers = self.dataloader_num_workers > 0
        if self.accelerator_config is None and self.dataloader_pin_memory:
            # pinned batches copied without blocking the training process
            self.accelerator_config = {"non_blocking": True}
        if self.final_weights_dtype not in FINAL_WEIGHT_DTYPES:
            raise ValueError(
                f"`final_weights_dtype` must be one of {FINAL_WEIGHT_DTYPES}, got {self.final_weights_dtype!r}."
            )
        super().__post_init__()
        if self.gradient_cache_chunk_size is not None:
            if self.gradient_cache_chunk_size <= 0:
                raise ValueError(f"`gradient_cache_chunk_size` must be > 0, got {self.gradient_cache_chunk_size}.")
            if self.gradient_accumulation_steps > 1:
                raise ValueError(
                    "`gradient_cache_chunk_size` replaces gradient accumulation for contrastive losses: set "
                    f"`gradient_accumulation_steps=1` (got {self.gradient_accumulation_steps}) and raise "
                    "`per_device_train_batch_size` to the batch you want."
                )


class CheckpointTrainer(Trainer):
    r"""
    `Trainer` that reloads checkpoints (`--resume_from_checkpoint`, `--load_best_model_at_end`) through
    `from_pretrained`. Trainer loads a checkpoint's tensors by name with `strict=False`, but transformers 5 saves some
    backbones (ViT) under legacy tensor names that only `from_pretrained` maps back, so the vision tower would
    silently keep its current weights. FSDP and DeepSpeed checkpoints keep Trainer's own loading.

    `eval_data_collator` (optional) collates the evaluation batches, e.g. the training collator without its
    augmentation.
    """

    def __init__(self, *args, eval_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator

    def get_eval_dataloader(self, eval_dataset=None):
        if self.eval_data_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def _load_through_from_pretrained(self, checkpoint: str, model=None) -> None:
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        saved = type(target).from_pretrained(checkpoint, dtype=next(target.parameters()).dtype)
        target.load_state_dict(saved.state_dict())
        logger.info(f"Loaded the model weights of {checkpoint}.")

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_through_from_pretrained(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._load_best_model()
        logger.info(f"Best checkpoint: {self.state.best_model_checkpoint} ({self.state.best_metric}).")
        self._load_through_from_pretrained(self.state.best_model_checkpoint)


class DenseLoggingCallback(TrainerCallback):
    """
    Logs often enough that a short run still draws a curve: at least `min_points` logs (every step when the run
    has fewer steps), whatever `logging_steps` says.
    """

    def __init__(self, min_points: int = 20):
        self.min_points = min_points

    def on_train_begin(self, args, state, control, **kwargs):
        dense = max(1, state.max_steps // self.min_points)
        if state.logging_steps > dense:
            logger.info(
                f"Logging every {dense} step(s) instead of {state.logging_steps}: the run has {state.max_steps}."
            )
            state.logging_steps = dense


class DatasetEpochCallback(TrainerCallback):
    r"""
    Passes the epoch to a training dataset with `set_epoch` at the start of every epoch. Trainer's own call reaches
    the dataset through accelerate's loader only with one process: with several, `DataLoaderShard.set_epoch` sets the
    sampler's epoch and skips the dataset's, and the augmentation would repeat every epoch.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is the whole number of epochs done at an epoch boundary, fractional after a mid-epoch resume
        self.dataset.set_epoch(int(state.epoch or 0))


class SistaTrainer(CheckpointTrainer):
    r"""
    `Trainer` for [`SistaModel`] pre-training: the loss is the model's (`return_loss=True`), and `loss_sia` and
    `loss_sta` are logged beside `loss`, averaged over the steps since the last log and over processes (also for
    evaluation, as `eval_loss_sia` and `eval_loss_sta`). With `args.gradient_cache_chunk_size`, each training step
    runs [`gradient_cache_backward`].

    Besides `Trainer`:

    * 8-bit `pixel_values` ([`PretrainingDataset`]) are normalised on the device with the processor's mean and std;
      `report_embeds` stay float32 (DeepSpeed would cast every float input to its dtype);
    * nothing in a training step reads a value back to the host: loss components accumulate as device tensors and
      are read when logged;
    * the training dataset's `set_epoch` is called every epoch ([`DatasetEpochCallback`]);
    * the model gets `training_step` (`state.global_step`) when its config has an STA warm start;
    * every process gets its own seed after the model is built (same initial weights, different dropout);
    * no weight decay on 1-d parameters (biases, norms) nor on the logit scale;
    * FSDP2 reduces gradients in float32 under bf16; its checkpoints stay sharded (with the config beside them, so a
      resume can be checked) and the final `save_model` writes whole weights in `args.final_weights_dtype`
      (DeepSpeed's fp32 master weights, not its bf16 copies).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # SistaModel.forward takes **kwargs, so Trainer would assume a token-count loss and multiply by world size
        self.model_accepts_loss_kwargs = False
        self._component_sums = {True: None, False: None}
        self._pixel_normalization = None
        self.add_callback(DenseLoggingCallback())
        if self.args.gradient_cache_chunk_size is not None and (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            raise ValueError(
                "`gradient_cache_chunk_size` supports single-process and DDP training, not FSDP/DeepSpeed."
            )
        sista = self.accelerator.unwrap_model(self.model)
        if self.args.gradient_accumulation_steps > 1 and sista.config.sia_weight > 0:
            logger.warning(
                f"gradient_accumulation_steps={self.args.gradient_accumulation_steps}: SIA is a contrastive loss, so "
                "each micro-batch contrasts only its own samples; the accumulated gradient is NOT that of the larger "
                "batch. Use `--gradient_cache_chunk_size` for large contrastive batches with small-batch memory."
            )
        if self.args.gradient_cache_chunk_size is not None and (
            sista.config.sta_start_step > 0 or sista.config.sta_warmup_steps > 0
        ):
            raise ValueError(
                "`gradient_cache_chunk_size` weights STA by `sta_weight` at every step; it does not support an STA "
                "warm start (`sta_start_step`, `sta_warmup_steps`)."
            )
        if self.train_dataset is not None and hasattr(self.train_dataset, "set_epoch"):
            self.add_callback(DatasetEpochCallback(self.train_dataset))
        if self.is_fsdp_enabled:
            set_fsdp_float32_reduction(self.accelerator.state.fsdp_plugin, self.args)
        # Trainer seeded every process alike for the initial weights; from here each draws its own dropout
        set_seed(self.args.seed, device_specific=True)

    def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
        """Weight decay on matrices only: not on biases, norms or the logit scale (all 1-d)."""
        return [name for name, parameter in model.named_parameters() if parameter.ndim >= 2]

    def _prepare_inputs(self, inputs: dict) -> dict:
        report_embeds = inputs.get("report_embeds")
        inputs = super()._prepare_inputs({key: value for key, value in inputs.items() if key != "report_embeds"})
        if report_embeds is not None:
            inputs["report_embeds"] = report_embeds.to(self.args.device, torch.float32, non_blocking=True)
        pixel_values = inputs.get("pixel_values")
        if pixel_values is not None and not pixel_values.is_floating_point():
            inputs["pixel_values"] = self._normalize_pixel_values(pixel_values)
        return inputs

    def _normalize_pixel_values(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self._pixel_normalization is None:
            image_processor = getattr(self.processing_class, "image_processor", None)
            if image_processor is None:
                raise ValueError(
                    "8-bit `pixel_values` are normalised with the image processor's mean and std: pass "
                    "`processing_class=SistaProcessor(...)` to the trainer."
                )
            num_channels = self.accelerator.unwrap_model(self.model).config.vision_config.num_channels
            dtype = torch.float32
            if self.is_deepspeed_enabled:  # DeepSpeed runs the model in its own dtype, without autocast
                dtype = self.accelerator.state.deepspeed_plugin.hf_ds_config.dtype()
            # cached on the device, so the step copies nothing from the host
            mean, std = (
                torch.tensor(values, dtype=torch.float32, device=pixel_values.device).reshape(-1, 1, 1)
                for values in (image_processor.image_mean, image_processor.image_std)
            )
            self._pixel_normalization = {
                "image_mean": mean,
                "image_std": std,
                "num_channels": num_channels,
                "dtype": dtype,
            }
        return normalize_pixel_values(pixel_values, **self._pixel_normalization)

    def _accumulate_components(self, loss_sia: torch.Tensor | None, loss_sta: torch.Tensor | None, training: bool):
        """Adds the step's loss components to device sums (no host sync; `log` reads them)."""
        if self._component_sums[training] is None:
            self._component_sums[training] = torch.zeros(3, dtype=torch.float32, device=self.args.device)
        zero = self._component_sums[training].new_zeros(())
        components = [zero if loss is None else loss.detach().float().reshape(()) for loss in (loss_sia, loss_sta)]
        self._component_sums[training] += torch.stack([*components, zero + 1])

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {**inputs, "return_loss": True}
        config = self.accelerator.unwrap_model(model).config
        # the step of an STA warm start; only then, so that a compiled model does not see a new int every step
        if model.training and (config.sta_start_step > 0 or config.sta_warmup_steps > 0):
            inputs["training_step"] = self.state.global_step
        outputs = model(**inputs)
        self._accumulate_components(outputs.loss_sia, outputs.loss_sta, training=model.training)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        chunk_size = self.args.gradient_cache_chunk_size
        if chunk_size is None or chunk_size >= inputs["input_ids"].shape[0]:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager():
            losses = gradient_cache_backward(
                model,
                inputs,
                chunk_size,
                backward=self.accelerator.backward,
                no_sync=lambda: self.accelerator.no_sync(model),
            )
        self._accumulate_components(losses["loss_sia"], losses["loss_sta"], training=True)
        return losses["loss"].to(self.args.device)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Trainer calls `log` on every process at the same steps, so the reduction below is a matching collective
        for training, prefix, key in ((True, "", "loss"), (False, "eval_", "eval_loss")):
            sums = self._component_sums[training]
            if key not in logs or sums is None:
                continue
            if self.accelerator.num_processes > 1:
                sums = self.accelerator.reduce(sums, reduction="sum")
            sia_sum, sta_sum, count = sums.double().tolist()  # the one read-back, at logging time
            if count == 0:
                continue
            config = self.accelerator.unwrap_model(self.model).config
            if config.sia_weight > 0:
                logs[f"{prefix}loss_sia"] = round(sia_sum / count, 6)
            if config.sta_weight > 0:
                logs[f"{prefix}loss_sta"] = round(sta_sum / count, 6)
            self._component_sums[training].zero_()
        super().log(logs, start_time)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        r"""
        Checkpoints (`_internal_call`) as `Trainer` writes them, plus the config and the processor beside FSDP's
        sharded weights; the final model whole, in `args.final_weights_dtype`, loadable by `from_pretrained`.
        """
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if _internal_call:
            super().save_model(output_dir, _internal_call=True)
            if self.is_fsdp_enabled and self.args.should_save:
                self.accelerator.unwrap_model(self.model).config.save_pretrained(output_dir)
                if self.processing_class is not None:
                    self.processing_class.save_pretrained(output_dir)
            return
        state_dict = self.full_state_dict()  # a collective under FSDP and DeepSpeed: every process calls it
        if self.args.should_save:
            dtype = getattr(torch, self.args.final_weights_dtype)
            state_dict = {
                name: tensor.to(dtype) if tensor.is_floating_point() else tensor for name, tensor in state_dict.items()
            }
            self._save(output_dir, state_dict=state_dict)
        self.accelerator.wait_for_everyone()

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model's weights on the main process: FSDP's shards gathered, DeepSpeed's fp32 master weights."""
        if self.is_fsdp_enabled:
            plugin = self.accelerator.state.fsdp_plugin
            plugin.set_state_dict_type("FULL_STATE_DICT")
            return self.accelerator.get_state_dict(self.model)
        if self.is_deepspeed_enabled:
            return deepspeed_fp32_state_dict(self.accelerator.unwrap_model(self.model))
        return self.accelerator.unwrap_model(self.model).state_dict()


def set_fsdp_float32_reduction(fsdp_plugin, args) -> None:
    """FSDP2 under bf16: parameters cast to bf16 for compute, gradients reduced across processes in float32
    (accelerate's policy for `mixed_precision: bf16` reduces in bf16, and its config file has no key for it)."""
    if getattr(fsdp_plugin, "fsdp_version", 1) != 2 or not args.bf16:
        return
    from torch.distributed.fsdp import MixedPrecisionPolicy

    fsdp_plugin.mixed_precision_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def deepspeed_fp32_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """DeepSpeed ZeRO's fp32 master copy of every parameter (a collective: every process calls it), with the
    module's buffers; a parameter without a master copy keeps its own values."""
    from deepspeed.utils import safe_get_full_fp32_param

    state_dict = model.state_dict()
    for name, parameter in model.named_parameters():
        master = safe_get_full_fp32_param(parameter)
        state_dict[name] = (master if master is not None else parameter.detach()).float().cpu()
    return state_dict


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """`None`, a checkpoint folder, or `"last"`/`"true"` for the newest `checkpoint-*` folder in `output_dir`."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint.lower() in ("last", "true"):
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            raise ValueError(
                f"--resume_from_checkpoint {resume_from_checkpoint}: no checkpoint-* folder in {output_dir}."
            )
        return last
    if not os.path.isdir(resume_from_checkpoint):
        raise ValueError(f"--resume_from_checkpoint: {resume_from_checkpoint} is not a folder.")
    return resume_from_checkpoint


def is_size_field(value) -> bool:
    """An int or a list of ints (hidden_size, depths, hidden_sizes, image_size ...), booleans excluded."""
    if isinstance(value, (list, tuple)):
        return bool(value) and all(is_size_field(item) for item in value)
    return isinstance(value, int) and not isinstance(value, bool)


def differing_size_fields(saved: dict, current: dict) -> list[tuple[str, object, object]]:
    """
    `(key, saved value, current value)` for the backbone family (`model_type`) and every size field (`is_size_field`
    in either dict) that differs between two backbone config dicts, whatever the family's field names.
    """
    keys = ["model_type"] + sorted(
        key for key in saved.keys() | current.keys() if is_size_field(saved.get(key)) or is_size_field(current.get(key))
    )
    return [(key, saved.get(key), current.get(key)) for key in keys if saved.get(key) != current.get(key)]


# What a finished or interrupted run leaves in its output folder.
PREVIOUS_RUN_FILES = ("trainer_state.json", "training_args.bin", "model.safetensors", "all_results.json")


def prepare_output_dir(output_dir: str, overwrite_output_dir: bool, resume_from_checkpoint: str | None) -> None:
    r"""
    Refuses to train into a folder that holds a previous run, so that its checkpoints never sit beside the new
    run's: `overwrite_output_dir` deletes the old `checkpoint-*` folders, TensorBoard logs (`runs/`), results and
    loss curve first (the model files are replaced by the new run's), and `resume_from_checkpoint` continues the
    run (the folder is kept).
    """
    path = Path(output_dir)
    if resume_from_checkpoint is not None or not path.is_dir():
        return
    previous = sorted(item.name for item in path.glob("checkpoint-*")) + [
        name for name in PREVIOUS_RUN_FILES if (path / name).exists()
    ]
    if not previous:
        return
    if not overwrite_output_dir:
        raise ValueError(
            f"--output_dir {output_dir} holds a previous run ({', '.join(previous[:4])}"
            f"{' ...' if len(previous) > 4 else ''}): pass --overwrite_output_dir to replace it, or "
            "--resume_from_checkpoint last to continue it."
        )
    logger.warning(f"--overwrite_output_dir: deleting the previous run in {output_dir} ({', '.join(previous[:4])}).")
    for folder in [*path.glob("checkpoint-*"), path / "runs"]:
        if folder.is_dir():
            shutil.rmtree(folder)
    for file in [*path.glob("*_results.json"), path / "loss_curve.png", *(path / name for name in PREVIOUS_RUN_FILES)]:
        file.unlink(missing_ok=True)


def check_checkpoint_matches(model: torch.nn.Module, checkpoint_dir: str | os.PathLike) -> None:
    r"""
    Raises a `ValueError` before training when the weights in `checkpoint_dir` cannot be loaded into `model`: it
    names the model sizes that differ between the two configs and the first parameters whose shapes differ.
    """
    checkpoint_dir = Path(checkpoint_dir)
    config_file = checkpoint_dir / "config.json"
    has_weights = (checkpoint_dir / "model.safetensors").is_file() or any(
        path.is_dir() for path in checkpoint_dir.glob(f"{FSDP_SHARDED_CHECKPOINT_PREFIX}*")
    )
    if not config_file.is_file() or not has_weights:
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint_dir} has no config.json and model weights (model.safetensors, or "
            f"FSDP's sharded {FSDP_SHARDED_CHECKPOINT_PREFIX}_* folder)."
        )
    saved = json.loads(config_file.read_text())
    if saved.get("model_type") != model.config.model_type:
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint_dir} holds a {saved.get('model_type')!r} model, expected "
            f"{model.config.model_type!r}."
        )
    # the checkpoint's architecture on the meta device: parameter shapes without memory or file reads; names are
    # compared in memory because transformers renames some tensors in the files
    with torch.device("meta"):
        saved_model = type(model)(type(model.config).from_dict(saved))
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in saved_model.state_dict().items()}
    mismatches = [
        f"{name}: checkpoint {found.get(name, 'missing')} vs this run {expected.get(name, 'missing')}"
        for name in sorted(expected.keys() | found.keys())
        if found.get(name) != expected.get(name)
    ]
    if not mismatches:
        return

    current = model.config.to_dict()
    differences = [
        f"{sub}.{key}: checkpoint {saved_value} vs this run {current_value}"
        for sub in ("vision_config", "text_config")
        for key, saved_value, current_value in differing_size_fields(saved.get(sub, {}), current[sub])
    ]
    if saved.get("projection_dim") != current["projection_dim"]:
        differences.append(
            f"projection_dim: checkpoint {saved.get('projection_dim')} vs this run {current['projection_dim']}"
        )
    raise ValueError(
        f"--resume_from_checkpoint {checkpoint_dir} was saved from a different model and cannot be resumed with "
        f"these model arguments. Config: {'; '.join(differences) or 'no size field differs'}. "
        f"Parameters ({len(mismatches)} differ): {'; '.join(mismatches[:3])}{' ...' if len(mismatches) > 3 else ''}. "
        "Use the model arguments of that run, or a new output_dir."
    )
