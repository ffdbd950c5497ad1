# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Pre-training parts shared by `pretrain.py`, the tests and the benchmarks.

* `XRayAugmentation`: chest X-ray augmentations in PIL/torch (no torchvision, no horizontal flip by default);
* `PretrainingDataset`: decode + augment (seeded per sample and epoch) + `SistaImageProcessor`;
* `SistaDataCollator`: tokenises the reports and stacks images and report embeddings;
* `train_report_tokenizer`: a WordPiece tokenizer built from the reports, for runs without a downloaded one;
* `gradient_cache_backward`: full-batch contrastive gradients with micro-batch memory (GradCache);
* `SistaTrainingArguments` / `SistaTrainer`: the `Trainer` subclass that logs `loss_sia` and `loss_sta`;
* `check_checkpoint_matches`: a clear error when a checkpoint belongs to another model.
"""

import contextlib
import json
import logging
import math
import os
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from transformers import BertTokenizerFast, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint


logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


# ---------------------------------------------------------------------------------------------------------------------
# Augmentations
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class XRayAugmentation:
    r"""
    Training augmentations for chest radiographs; every random draw comes from the `rng` passed in, so that
    [`PretrainingDataset`] can give each sample its own seed.

    Geometric part (`geometric`, on the decoded PIL image, before the image processor): one affine warp combining a
    random resized crop (area fraction in `crop_scale`, aspect ratio in `crop_ratio`), a rotation of at most
    `rotation_degrees` and a translation of at most `translate` of the image side; uncovered borders are black, as
    outside a collimated radiograph. Photometric part (`photometric`, on the processor's normalised tensor):
    brightness shift up to `brightness` and contrast factor within `1 ± contrast`, in [0, 1] intensity units.

    No horizontal flip by default: reports name the patient's side, and a flip would make "left" wrong.
    """

    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.1)
    rotation_degrees: float = 10.0
    translate: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.1
    horizontal_flip: bool = False

    def __post_init__(self):
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"`crop_scale` must satisfy 0 < low <= high <= 1, got {self.crop_scale}.")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"`crop_ratio` must satisfy 0 < low <= high, got {self.crop_ratio}.")
        for name in ("rotation_degrees", "translate", "brightness", "contrast"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")

    def geometric(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Random resized crop + rotation + translation (+ optional flip) as one bilinear affine warp, same size."""
        width, height = image.size
        area_fraction = rng.uniform(*self.crop_scale)
        ratio = math.exp(rng.uniform(math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])))
        crop_width = min(math.sqrt(area_fraction * ratio), 1.0) * width
        crop_height = min(math.sqrt(area_fraction / ratio), 1.0) * height
        # crop centre anywhere the crop fits, then the translation on top
        center_x = rng.uniform(crop_width / 2, width - crop_width / 2) + rng.uniform(-1, 1) * self.translate * width
        center_y = (
            rng.uniform(crop_height / 2, height - crop_height / 2) + rng.uniform(-1, 1) * self.translate * height
        )
        angle = math.radians(rng.uniform(-self.rotation_degrees, self.rotation_degrees))
        flip = -1.0 if self.horizontal_flip and rng.uniform() < 0.5 else 1.0

        # PIL maps each output pixel (u, v) to the input point (a u + b v + c, d u + e v + f)
        scale_x, scale_y = flip * crop_width / width, crop_height / height
        cos, sin = math.cos(angle), math.sin(angle)
        a, b = cos * scale_x, -sin * scale_y
        d, e = sin * scale_x, cos * scale_y
        c = center_x - a * width / 2 - b * height / 2
        f = center_y - d * width / 2 - e * height / 2
        # PIL warps 8-bit and 32-bit images; 16-bit ones are widened first (the processor windows them anyway)
        if image.mode not in ("L", "I", "F"):
            image = image.convert("I" if image.mode.startswith("I;16") else "L")
        return image.transform(
            (width, height), Image.Transform.AFFINE, (a, b, c, d, e, f), resample=Image.Resampling.BILINEAR
        )

    def photometric(
        self, pixel_values: torch.Tensor, image_mean: list[float], image_std: list[float], rng: np.random.Generator
    ) -> torch.Tensor:
        """Brightness and contrast jitter of one normalised image `(channels, height, width)`, in [0, 1] units."""
        mean = torch.tensor(image_mean, dtype=pixel_values.dtype)[:, None, None]
        std = torch.tensor(image_std, dtype=pixel_values.dtype)[:, None, None]
        intensities = pixel_values * std + mean
        contrast = rng.uniform(1 - self.contrast, 1 + self.contrast)
        brightness = rng.uniform(-self.brightness, self.brightness)
        average = intensities.mean()
        intensities = ((intensities - average) * contrast + average + brightness).clamp(0, 1)
        return (intensities - mean) / std


class PretrainingDataset(torch.utils.data.Dataset):
    r"""
    A `datasets.Dataset` of image-report pairs as model features: decodes the images, augments them (when
    `augmentation` is given) and runs the image processor; passes the reports and `report_embeds` through.

    Augmentation seeds are `(seed, epoch, sample index)`: the same sample gets new draws every epoch, and the draws
    do not depend on the number of processes or workers, on the loader's prefetching, or on a resume from a
    checkpoint (a global RNG would be restored one prefetched batch late). The `Trainer`'s dataloader calls
    `set_epoch` before each epoch.

    Items are dicts with `pixel_values` (a float tensor), `report` and, when present, `report_embeds`.
    """

    def __init__(
        self,
        dataset,
        image_processor,
        augmentation: XRayAugmentation | None = None,
        seed: int = 0,
        image_column: str = "image",
        report_column: str = "report",
        report_embeds_column: str | None = "report_embeds",
    ):
        columns = [image_column, report_column]
        if report_embeds_column and report_embeds_column in dataset.column_names:
            columns.append(report_embeds_column)
        # only these columns are decoded: masks and metadata stay out of the loader
        self.dataset = dataset.select_columns(columns)
        self.image_processor = image_processor
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0
        self.image_column, self.report_column = image_column, report_column
        self.report_embeds_column = columns[2] if len(columns) > 2 else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        batch = self.dataset[list(indices)]
        images = batch[self.image_column]
        rngs = [np.random.default_rng([self.seed, self.epoch, int(index)]) for index in indices]
        if self.augmentation is not None:
            images = [self.augmentation.geometric(image, rng) for image, rng in zip(images, rngs)]
        pixel_values = self.image_processor(images, return_tensors="pt")["pixel_values"]
        features = []
        for position, rng in enumerate(rngs):
            image = pixel_values[position]
            if self.augmentation is not None:
                image = self.augmentation.photometric(
                    image, self.image_processor.image_mean, self.image_processor.image_std, rng
                )
            feature = {"pixel_values": image, "report": batch[self.report_column][position]}
            if self.report_embeds_column is not None:
                feature["report_embeds"] = batch[self.report_embeds_column][position]
            features.append(feature)
        return features


# ---------------------------------------------------------------------------------------------------------------------
# Collator and tokenizer
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class SistaDataCollator:
    r"""
    Tokenises the reports of a batch (padded to the longest, truncated to `max_length`) and stacks `pixel_values`
    and `report_embeds`. Adds `return_loss=True` so that `Trainer` also computes the loss during evaluation.
    """

    tokenizer: Any
    max_length: int = 128
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = dict(
            self.tokenizer(
                [feature["report"] for feature in features],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                pad_to_multiple_of=self.pad_to_multiple_of,
                return_tensors="pt",
            )
        )
        batch["pixel_values"] = torch.stack([torch.as_tensor(feature["pixel_values"]) for feature in features])
        if "report_embeds" in features[0]:
            batch["report_embeds"] = torch.tensor(
                np.asarray([feature["report_embeds"] for feature in features]), dtype=torch.float32
            )
        batch["return_loss"] = True
        return batch


def train_report_tokenizer(reports, vocab_size: int = 3000, save_directory: str | os.PathLike | None = None):
    r"""
    Builds a lower-cased WordPiece `BertTokenizerFast` from `reports`: BERT's normaliser and pre-tokenizer split the
    words; every character seen and every ASCII letter, digit and punctuation mark, alone and as a `##`
    continuation, is a token; the most frequent words (ties broken alphabetically) fill the vocabulary up to
    `vocab_size` as whole tokens, and the rarer ones fall back to characters.

    Deterministic: the `tokenizers` WordPiece trainer breaks ties between equally frequent merges differently from
    run to run, which would give two runs on the same data different vocabularies and different initial weights.
    """
    normalizer, pre_tokenizer = BertNormalizer(lowercase=True), BertPreTokenizer()
    word_counts = Counter()
    for report in reports:
        words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(report))
        word_counts.update(word for word, _ in words)
    # letters, digits and punctuation always, so an unseen word still splits into pieces instead of one [UNK]
    always = string.ascii_lowercase + string.digits + string.punctuation
    characters = sorted({character for word in word_counts for character in word} | set(always))
    vocab = list(SPECIAL_TOKENS) + characters + [f"##{character}" for character in characters]
    known = set(vocab)
    room = max(vocab_size - len(vocab), 0)
    ranked_words = sorted((word for word in word_counts if word not in known), key=lambda w: (-word_counts[w], w))
    vocab += ranked_words[:room]
    if len(ranked_words) > room:
        logger.info(f"Tokenizer: {len(ranked_words) - room} rare words fall back to characters (vocab {vocab_size}).")

    # transformers 5 tokenizers take the vocabulary itself (`vocab=`); a `vocab_file=` argument is ignored
    tokenizer = BertTokenizerFast(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)
    if save_directory is not None:
        tokenizer.save_pretrained(save_directory)
    return tokenizer


# ---------------------------------------------------------------------------------------------------------------------
# Gradient cache
# ---------------------------------------------------------------------------------------------------------------------


def _rng_state() -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def _set_rng_state(state: tuple):
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def gradient_cache_backward(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    chunk_size: int,
    backward=torch.Tensor.backward,
    no_sync=contextlib.nullcontext,
) -> dict[str, torch.Tensor]:
    r"""
    Backpropagates the full-batch SISTA loss while holding the activations of one `chunk_size` micro-batch at a
    time (GradCache, Gao et al. 2021). SIA is not a sum over micro-batches, so:

    1. embed every micro-batch without gradients, recording the RNG state so that dropout replays identically;
    2. compute SIA on the whole batch from those embeddings (gathered across processes as usual) and backpropagate
       it to the embeddings, which caches `dL/d(embeddings)` and gives the logit scale its gradient;
    3. re-run each micro-batch with gradients and backpropagate `<embeddings, cached gradient>` plus its share of
       STA, which is a per-sample mean and therefore additive.

    The parameter gradients equal those of one pass over the whole batch (up to float rounding).

    Args:
        model: the (possibly DDP-wrapped) [`SistaModel`]; its `module` or itself must expose `compute_sia_loss`.
        inputs: a collated batch (`input_ids`, `attention_mask`, `pixel_values`, optional `token_type_ids`,
            `report_embeds`).
        chunk_size: micro-batch size of the passes with gradients.
        backward: how to backpropagate a loss (e.g. `accelerator.backward`).
        no_sync: a context factory that turns off gradient synchronisation (e.g. `accelerator.no_sync(model)`);
            every micro-batch but the last runs under it.

    Returns:
        dict with the detached `loss`, `loss_sia` and `loss_sta` (None when its weight is 0) of the whole batch.
    """
    sista = model.module if hasattr(model, "module") else model
    config = sista.config
    model_inputs = {key: value for key, value in inputs.items() if key != "return_loss"}
    batch_size = model_inputs["input_ids"].shape[0]
    chunks = [
        {key: value[start : start + chunk_size] for key, value in model_inputs.items() if key != "report_embeds"}
        for start in range(0, batch_size, chunk_size)
    ]
    use_sta = config.sta_weight > 0
    use_sia = config.sia_weight > 0

    rng_states, image_embeds, text_embeds = [], [], []
    with torch.no_grad():
        for chunk in chunks:
            rng_states.append(_rng_state())
            outputs = sista(**chunk, return_loss=False)
            image_embeds.append(outputs.image_embeds)
            text_embeds.append(outputs.text_embeds)
    rng_after_first_pass = _rng_state()

    image_embeds = torch.cat(image_embeds).requires_grad_(use_sia)
    text_embeds = torch.cat(text_embeds).requires_grad_(use_sia)
    loss_sia = None
    if use_sia:
        loss_sia = sista.compute_sia_loss(image_embeds, text_embeds, model_inputs.get("report_embeds"))
        backward(config.sia_weight * loss_sia)

    loss_sta_total = torch.zeros(())
    start = 0
    for index, (chunk, rng_state) in enumerate(zip(chunks, rng_states)):
        _set_rng_state(rng_state)
        size = chunk["input_ids"].shape[0]
        is_last = index == len(chunks) - 1
        with contextlib.nullcontext() if is_last else no_sync():
            # `output_token_patch_weights` makes the forward compute STA without SIA (no gather, no logits loss)
            outputs = model(**chunk, return_loss=False, output_token_patch_weights=use_sta)
            surrogate = (
                # the logit scale got its gradient in step 2; touching it keeps DDP's reducer expecting every parameter
                outputs.logits_per_text.sum() * 0.0
            )
            if use_sia:
                surrogate = surrogate + (outputs.image_embeds * image_embeds.grad[start : start + size]).sum()
                surrogate = surrogate + (outputs.text_embeds * text_embeds.grad[start : start + size]).sum()
            if use_sta:
                surrogate = surrogate + config.sta_weight * outputs.loss_sta * (size / batch_size)
                loss_sta_total = loss_sta_total + outputs.loss_sta.detach().float() * (size / batch_size)
            backward(surrogate)
        start += size
    _set_rng_state(rng_after_first_pass)

    loss_sta = loss_sta_total if use_sta else None
    loss = sum(
        weight * term.detach()
        for weight, term in ((config.sia_weight, loss_sia), (config.sta_weight, loss_sta))
        if term is not None and weight > 0
    )
    return {"loss": loss, "loss_sia": None if loss_sia is None else loss_sia.detach(), "loss_sta": loss_sta}


# ---------------------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class SistaTrainingArguments(TrainingArguments):
    r"""
    `TrainingArguments` with defaults that SISTA pre-training needs, plus `gradient_cache_chunk_size`.

    * `remove_unused_columns=False`: the dataset yields `report` text for the collator, not model inputs;
    * `ddp_find_unused_parameters=False`: every parameter gets a gradient (the backbones have no pooler);
    * `dataloader_drop_last=True`: global-batch SIA needs the same batch size on every process;
    * `do_train=True`, `report_to="tensorboard"`, `logging_steps=10`, `save_strategy="steps"`.
    """

    do_train: bool = field(
        default=True, metadata={"help": "Pre-train (the point of the script); False to only evaluate."}
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
    prediction_loss_only: bool = field(
        default=True, metadata={"help": "Evaluation reports the losses; gathering every output would cost memory."}
    )
    gradient_cache_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Micro-batch size of a gradient cache (GradCache): the loss and gradients of the full "
            "per-device batch with the activation memory of this many samples. None: one pass per batch."
        },
    )

    def __post_init__(self):
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
    """

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


class SistaTrainer(CheckpointTrainer):
    r"""
    `Trainer` for [`SistaModel`] pre-training: the loss is the model's (`return_loss=True`), and `loss_sia` and
    `loss_sta` are logged beside `loss`, averaged over the steps since the last log and over processes (also for
    evaluation, as `eval_loss_sia` and `eval_loss_sta`). With `args.gradient_cache_chunk_size`, each training step
    runs [`gradient_cache_backward`].
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # SistaModel.forward takes **kwargs, so Trainer would assume a token-count loss and multiply by world size
        self.model_accepts_loss_kwargs = False
        self._component_sums = {True: torch.zeros(3, dtype=torch.float64), False: torch.zeros(3, dtype=torch.float64)}
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

    def _accumulate_components(self, loss_sia: torch.Tensor | None, loss_sta: torch.Tensor | None, training: bool):
        sums = self._component_sums[training]
        sums[0] += 0.0 if loss_sia is None else loss_sia.detach().double().item()
        sums[1] += 0.0 if loss_sta is None else loss_sta.detach().double().item()
        sums[2] += 1

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {**inputs, "return_loss": True}
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
            if key not in logs or self._component_sums[training][2] == 0:
                continue
            sums = self._component_sums[training]
            if self.accelerator.num_processes > 1:
                sums = self.accelerator.reduce(sums.to(self.args.device), reduction="sum").cpu()
            config = self.accelerator.unwrap_model(self.model).config
            if config.sia_weight > 0:
                logs[f"{prefix}loss_sia"] = round((sums[0] / sums[2]).item(), 6)
            if config.sta_weight > 0:
                logs[f"{prefix}loss_sta"] = round((sums[1] / sums[2]).item(), 6)
            self._component_sums[training].zero_()
        super().log(logs, start_time)


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


def check_checkpoint_matches(model: torch.nn.Module, checkpoint_dir: str | os.PathLike) -> None:
    r"""
    Raises a `ValueError` before training when the weights in `checkpoint_dir` cannot be loaded into `model`: it
    names the model sizes that differ between the two configs and the first parameters whose shapes differ.
    """
    checkpoint_dir = Path(checkpoint_dir)
    config_file = checkpoint_dir / "config.json"
    if not config_file.is_file() or not (checkpoint_dir / "model.safetensors").is_file():
        raise ValueError(f"--resume_from_checkpoint {checkpoint_dir} has no config.json and model.safetensors.")
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
    size_keys = (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size", "patch_size",
        "num_channels", "vocab_size", "max_position_embeddings",
    )  # fmt: skip
    differences = [
        f"{sub}.{key}: checkpoint {saved.get(sub, {}).get(key)} vs this run {current[sub].get(key)}"
        for sub in ("vision_config", "text_config")
        for key in size_keys
        if saved.get(sub, {}).get(key) != current[sub].get(key)
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
