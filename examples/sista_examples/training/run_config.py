# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
The one resolution step of a pre-training run: the command line, the checkpoint (or backbones) it starts from, the
dataset's `sista_dataset.json` and splits, and the defaults are read once into a frozen `PretrainingRunConfig`, which
records where each value came from. Everything after it reads the run configuration; nothing writes back into the
parsed arguments.

Order of precedence, the same for every setting: **given** (the command line) → **dataset** (the dataset's
`sista_dataset.json` and split names) → **checkpoint** (`--model_name_or_path`, or the two backbones) → **default**
(the preset's, `SistaConfig`'s or the report encoder's). A setting takes its value from the first of these that has
one; docs/pretraining.md lists which sources each setting has.
"""

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from transformers import AutoConfig

from configuration_sista import SistaConfig

from ..checkpoints import read_sista_config, read_training_image_size
from ..data.synthcxr import load_or_generate_dataset
from .pretraining import (
    MODEL_PRESETS,
    PRETRAINING_SPLITS,
    STA_OPTION_FIELDS,
    PretrainingDataArguments,
    PretrainingModelArguments,
    backbone_width,
    check_split,
    report_embeddings_plan,
    resolve_splits,
)


logger = logging.getLogger(__name__)

SOURCES = ("given", "dataset", "checkpoint", "default")
# the objectives' loss weights and SIA mode: SIA is off (CLIP's loss) without "sia", STA weighs 0 without "sta"
SIA_OBJECTIVES = ("sia", "sista")
STA_OBJECTIVES = ("sta", "sista")


@dataclass(frozen=True)
class PretrainingRunConfig:
    """
    A pre-training run's settings as used, each resolved once from the first source that has it (see the module
    docstring); `sources` names that source per field (`given`, `dataset`, `checkpoint` or `default`).

    Model: `model_name_or_path`, `vision_model_name_or_path`, `text_model_name_or_path` (what the model starts from),
    `model_preset`, `image_size`, `projection_dim` (None: the backbones' narrower width is read when the two
    backbones load), `dropout`, `max_length`, `vision_pooling`, `text_pooling`. Objective: `objective`, `sia_mode`
    (`"off"` for objectives without SIA), `sia_threshold`, `sta_weight` (0 without STA), `sta_temperature`,
    and STA's options (`STA_OPTION_FIELDS`: `sta_negatives`, `sta_sparsity`, `sta_top_k`, `sta_center_patches`,
    `sta_start_step`, `sta_warmup_steps`, `sta_token_unit`). Data (None without a dataset): `train_split`, `eval_split`, `report_encoder`, and
    `report_embeddings`, the plan of the SIA report embeddings (stored or computed; None when SIA reads none).
    """

    model_name_or_path: str | None
    vision_model_name_or_path: str | None
    text_model_name_or_path: str | None
    model_preset: str
    image_size: int
    projection_dim: int | None
    dropout: float
    max_length: int
    vision_pooling: str
    text_pooling: str
    objective: str
    sia_mode: str
    sia_threshold: float
    sta_weight: float
    sta_temperature: float
    sta_negatives: str
    sta_sparsity: str
    sta_top_k: int
    sta_center_patches: bool
    sta_start_step: int
    sta_warmup_steps: int
    sta_token_unit: str
    train_split: str | None
    eval_split: str | None
    report_encoder: str | None
    report_embeddings: Mapping[str, Any] | None
    sources: Mapping[str, str]
    # the --model_name_or_path config.json as read by the resolution, for `build_model` (not recorded)
    checkpoint_config: Mapping[str, Any] | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def uses_report_embeds(self) -> bool:
        """Whether SIA reads a `report_embeds` column: it is on, and compares the reports by their embeddings."""
        return self.report_embeddings is not None

    def sista_config_fields(self) -> dict[str, Any]:
        """The `SistaConfig` fields this run sets, whatever the model starts from."""
        return {
            "sia_weight": 1.0,
            "sia_mode": self.sia_mode,
            "sia_threshold": self.sia_threshold,
            "sta_weight": self.sta_weight,
            "sta_temperature": self.sta_temperature,
            **{name: getattr(self, name) for name in STA_OPTION_FIELDS},
            "vision_pooling": self.vision_pooling,
            "text_pooling": self.text_pooling,
        }

    def to_record(self) -> dict[str, dict[str, Any]]:
        """`{field: {"value": ..., "source": ...}}`, as `run_arguments.json` records it."""
        record = {}
        for field in dataclasses.fields(self):
            if field.name in ("sources", "checkpoint_config", "report_embeddings"):
                continue
            record[field.name] = {"value": getattr(self, field.name), "source": self.sources[field.name]}
        return record


class _Resolution:
    """Collects each setting's value with its source, first source wins."""

    def __init__(self):
        self.values, self.sources = {}, {}

    def take(self, name: str, *candidates: tuple[str, Any]):
        """The first candidate `(source, value)` whose value is not None; `(default, None)` when none has one."""
        source, value = next(((source, value) for source, value in candidates if value is not None), ("default", None))
        if source not in SOURCES:
            raise ValueError(f"Unknown source {source!r} of {name!r}; expected one of {SOURCES}.")
        self.values[name], self.sources[name] = value, source
        return value

    def given_or_default(self, name: str, arguments) -> Any:
        """A setting with no other source: `given` when it differs from its argument's default."""
        value = getattr(arguments, name)
        default = {field.name: field.default for field in dataclasses.fields(arguments)}[name]
        return self.take(name, ("given" if value != default else "default", value))


def check_starting_point(model_args: PretrainingModelArguments) -> None:
    """What a run may start from: a whole SISTA checkpoint, two backbones, or a preset."""
    if model_args.model_name_or_path is not None and (
        model_args.vision_model_name_or_path is not None or model_args.text_model_name_or_path is not None
    ):
        raise ValueError(
            "--model_name_or_path (a whole SISTA checkpoint) excludes --vision_model_name_or_path and "
            f"--text_model_name_or_path (two backbones); got {model_args.model_name_or_path!r} with "
            f"{model_args.vision_model_name_or_path!r} and {model_args.text_model_name_or_path!r}."
        )
    if (model_args.vision_model_name_or_path is None) != (model_args.text_model_name_or_path is None):
        raise ValueError(
            "--vision_model_name_or_path and --text_model_name_or_path go together (two pre-trained backbones); "
            f"got {model_args.vision_model_name_or_path!r} and {model_args.text_model_name_or_path!r}."
        )
    if model_args.image_size is not None and model_args.image_size < 1:
        raise ValueError(f"--image_size must be a positive number of pixels, got {model_args.image_size}.")


def resolve_run_config(
    model_args: PretrainingModelArguments,
    data_args: PretrainingDataArguments | None = None,
    training_args=None,
):
    """
    `(run configuration, dataset)`: every source read once, in the order of precedence of the module docstring.
    With `data_args`, the dataset is loaded (SynthCXR generated at the resolved image size where allowed) and its
    splits, report embeddings and SIA threshold resolved; without, the data fields are None and the dataset is None.
    """
    check_starting_point(model_args)
    resolution = _Resolution()
    take = resolution.take
    for name in ("model_name_or_path", "vision_model_name_or_path", "text_model_name_or_path", "model_preset",
                 "dropout", "max_length", "objective", "sta_temperature"):  # fmt: skip
        resolution.given_or_default(name, model_args)

    # the checkpoint or backbones the model starts from, each file read once
    checkpoint_config = checkpoint_size = vision_backbone_size = None
    backbone_projection_dim = None
    if model_args.model_name_or_path is not None:
        checkpoint_config = read_sista_config(model_args.model_name_or_path)
        checkpoint_size = read_training_image_size(model_args.model_name_or_path)
        for name, checkpoint_value in (
            ("image_size", checkpoint_size), ("projection_dim", checkpoint_config.get("projection_dim"))
        ):
            given = getattr(model_args, name)
            if given is not None and checkpoint_value is not None and given != checkpoint_value:
                unit = " px" if name == "image_size" else ""
                raise ValueError(
                    f"--{name} {given} differs from the {checkpoint_value}{unit} of --model_name_or_path "
                    f"{model_args.model_name_or_path!r}; leave --{name} out to use the checkpoint's."
                )
    elif model_args.vision_model_name_or_path is not None:
        vision_config = AutoConfig.from_pretrained(model_args.vision_model_name_or_path)
        text_config = AutoConfig.from_pretrained(model_args.text_model_name_or_path)
        size = getattr(vision_config, "image_size", None)
        vision_backbone_size = size if isinstance(size, int) else None
        backbone_projection_dim = min(backbone_width(vision_config), backbone_width(text_config))
    from_preset = model_args.model_name_or_path is None and model_args.vision_model_name_or_path is None
    preset = MODEL_PRESETS[model_args.model_preset]
    checkpoint = checkpoint_config or {}

    image_size = take("image_size", ("given", model_args.image_size), ("checkpoint", checkpoint_size),
                      ("checkpoint", vision_backbone_size), ("default", preset["image_size"]))  # fmt: skip
    take("projection_dim", ("given", model_args.projection_dim), ("checkpoint", checkpoint.get("projection_dim")),
         ("checkpoint", backbone_projection_dim), ("default", preset["projection_dim"] if from_preset else None))
    take("vision_pooling", ("given", model_args.vision_pooling), ("checkpoint", checkpoint.get("vision_pooling")),
         ("default", preset["vision_pooling"] if from_preset else None), ("default", SistaConfig.vision_pooling))
    take("text_pooling", ("given", model_args.text_pooling), ("checkpoint", checkpoint.get("text_pooling")),
         ("default", SistaConfig.text_pooling))
    for name in STA_OPTION_FIELDS:
        take(name, ("given", getattr(model_args, name)), ("checkpoint", checkpoint.get(name)),
             ("default", getattr(SistaConfig, name)))
    # the objective switches SIA's false-negative removal and STA on or off; within it, the options set them
    uses_sia = model_args.objective in SIA_OBJECTIVES
    uses_sta = model_args.objective in STA_OBJECTIVES
    defaults = {field.name: field.default for field in dataclasses.fields(model_args)}
    objective_source = resolution.sources["objective"]
    take("sia_mode", ("given" if uses_sia and model_args.sia_mode != defaults["sia_mode"] else objective_source,
                      model_args.sia_mode if uses_sia else "off"))
    take("sta_weight", ("given" if uses_sta and model_args.sta_weight != defaults["sta_weight"] else objective_source,
                        model_args.sta_weight if uses_sta else 0.0))  # fmt: skip
    similarity_source = checkpoint.get("sia_similarity_source", SistaConfig.sia_similarity_source)
    reads_report_embeds = uses_sia and similarity_source == "report_embeds"

    dataset = None
    plan = None
    if data_args is not None:
        dataset = load_or_generate_dataset(
            data_args.dataset_path, data_args, image_size, training_args,
            num_proc=data_args.preprocessing_num_workers, single_split=data_args.train_split or PRETRAINING_SPLITS[-1],
        )  # fmt: skip
        do_eval = training_args is None or training_args.do_eval
        train_split, eval_split = resolve_splits(dataset, data_args, do_eval)
        for split in (train_split, eval_split):  # before any embedding is planned or computed
            if split is not None:
                check_split(dataset, split, data_args.dataset_path)
        take("train_split", ("given", data_args.train_split), ("dataset", train_split))
        take("eval_split", ("given", data_args.eval_split if do_eval else None), ("dataset", eval_split))
        if reads_report_embeds:
            plan = report_embeddings_plan(
                dataset, data_args.dataset_path, data_args.report_encoder, model_args.sia_threshold
            )
            take("report_encoder", (plan["encoder_source"], plan["encoder"]))
            take("sia_threshold", (plan["sia_threshold_source"], plan["sia_threshold"]))
        else:
            take("report_encoder", ("given", data_args.report_encoder))
    else:
        for name in ("train_split", "eval_split", "report_encoder"):
            take(name)
    if "sia_threshold" not in resolution.values:
        # SIA without report embeddings (off, or comparing reports another way): the threshold of the model
        take("sia_threshold", ("given", model_args.sia_threshold), ("checkpoint", checkpoint.get("sia_threshold")),
             ("default", SistaConfig.sia_threshold))
    resolution.sources["report_embeddings"] = "dataset" if plan is not None else "default"

    run_config = PretrainingRunConfig(
        **resolution.values,
        report_embeddings=None if plan is None else MappingProxyType(plan),
        sources=MappingProxyType(dict(resolution.sources)),
        checkpoint_config=None if checkpoint_config is None else MappingProxyType(checkpoint_config),
    )
    # the SistaConfig fields are validated now, before any data is embedded or any model built
    SistaConfig(**{key: value for key, value in run_config.sista_config_fields().items()})
    logger.info(
        "Run configuration: "
        + ", ".join(f"{name}={entry['value']!r} ({entry['source']})" for name, entry in run_config.to_record().items())
    )
    return run_config, dataset
