#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Pre-train SISTA (SIA + STA) on chest X-ray image-report pairs with the Hugging Face `Trainer`.

The same script runs on one process or several (DDP, FSDP, DeepSpeed ZeRO-2) through `accelerate launch`:

    # SynthCXR is generated into the default --dataset_path data/synthcxr when it does not exist yet (another
    # missing path is an error unless --generate_synthcxr asks for SynthCXR there)
    python examples/pretrain.py --output_dir outputs/sista-small --model_preset small --num_train_epochs 2

    # 2 processes on CPU (gloo); on GPUs drop ACCELERATE_USE_CPU and use --config_file for FSDP/DeepSpeed (bf16)
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 examples/pretrain.py --output_dir ...
    accelerate launch --config_file examples/accelerate_configs/fsdp.yaml --num_processes 8 examples/pretrain.py ...

    # a prepared real dataset (datasets.load_from_disk; its `train` split, evaluated on `validation`) and two
    # pre-trained backbones
    python examples/pretrain.py --dataset_path data/mimic_cxr --vision_model_name_or_path google/vit-base-patch16-224 \
        --text_model_name_or_path microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract --output_dir outputs/sista-base

The output directory holds the model, the processor (image processor + tokenizer) and the remote code, so it loads
with `SistaModel.from_pretrained(output_dir)` and `AutoModel/AutoProcessor.from_pretrained(output_dir,
trust_remote_code=True)`; plus TensorBoard logs under `runs/` and `loss_curve.png`.
"""

import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

import datasets
import transformers
from transformers import HfArgumentParser, set_seed

from modeling_sista import text_max_positions
from processing_sista import SistaImageProcessor, SistaProcessor
from sista_examples.data.report_fitting import count_truncated_reports
from sista_examples.hub.release import hub_push_request, push_after_training
from sista_examples.training.augmentation import XRayAugmentation
from sista_examples.training.collator import SistaDataCollator
from sista_examples.training.dataset import PretrainingDataset
from sista_examples.training.pretraining import (
    PretrainingDataArguments,
    PretrainingModelArguments,
    build_model,
    build_tokenizer,
    prepare_report_embeddings,
    retrieval_sanity,
    save_loss_curve,
    select_split,
)
from sista_examples.training.run_config import resolve_run_config
from sista_examples.training.trainer import (
    SistaTrainer,
    SistaTrainingArguments,
    check_checkpoint_matches,
    prepare_output_dir,
    resolve_checkpoint,
)
from sista_examples.utils import check_output_dir_writable


logger = logging.getLogger(__name__)


def main(args: list[str] | None = None):
    parser = HfArgumentParser((PretrainingModelArguments, PretrainingDataArguments, SistaTrainingArguments))
    if args is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=args)

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    # this script's own progress messages on the main process, whatever the libraries' level
    script_log_level = min(log_level, logging.INFO) if training_args.should_log else log_level
    for name in (__name__, "sista_examples"):
        logging.getLogger(name).setLevel(script_log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.warning(
        f"Process {training_args.process_index}/{training_args.world_size}, device {training_args.device}, "
        f"distributed: {training_args.parallel_mode.value}"
    )

    # every bad input fails here, before any training
    check_output_dir_writable(training_args.output_dir)
    with training_args.main_process_first(desc="output dir"):
        prepare_output_dir(
            training_args.output_dir, training_args.overwrite_output_dir, training_args.resume_from_checkpoint
        )
    hub_push = hub_push_request(training_args)
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    set_seed(training_args.seed)
    # every setting resolved once (command line, dataset, checkpoint, defaults) and frozen; nothing below changes it
    run_config, raw_dataset = resolve_run_config(model_args, data_args, training_args)
    path = data_args.dataset_path
    train_dataset = select_split(raw_dataset, run_config.train_split, data_args.max_train_samples, path)
    eval_dataset = None
    if run_config.eval_split is not None:
        eval_dataset = select_split(raw_dataset, run_config.eval_split, data_args.max_eval_samples, path)
    report_embeddings = None
    if run_config.uses_report_embeds:
        raw_dataset, report_embeddings = prepare_report_embeddings(raw_dataset, run_config, data_args, training_args)
        # the same rows again, now with the embeddings computed on every split
        train_dataset = select_split(raw_dataset, run_config.train_split, data_args.max_train_samples, path)
        if eval_dataset is not None:
            eval_dataset = select_split(raw_dataset, run_config.eval_split, data_args.max_eval_samples, path)

    tokenizer = build_tokenizer(model_args, train_dataset, checkpoint, training_args)
    num_truncated = count_truncated_reports(tokenizer, train_dataset["report"], run_config.max_length)
    logger.info(
        f"{num_truncated} of {len(train_dataset)} training reports exceed --max_length {run_config.max_length} tokens "
        "and are truncated (the findings are cut; an impression is kept whole)."
    )
    set_seed(training_args.seed)  # same initial weights whatever the steps above drew
    model = build_model(run_config, tokenizer)
    if checkpoint is not None:
        check_checkpoint_matches(model, checkpoint)
    logger.info(
        f"SISTA ({run_config.objective}): {model.num_parameters() / 1e6:.1f}M parameters, "
        f"sia_threshold={model.config.sia_threshold}, sta_weight={model.config.sta_weight}"
    )

    # the training image size lives here: saved with the processor, read back by every later script
    image_processor = SistaImageProcessor(
        size={"height": run_config.image_size, "width": run_config.image_size},
        num_channels=model.config.vision_config.num_channels,
    )
    # the saved tokenizer then truncates to the text tower's length by itself
    processor = SistaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        model_max_length=text_max_positions(model.config.text_config),
    )
    augmentation = None
    if data_args.augment:
        augmentation = XRayAugmentation(
            crop_scale=(data_args.crop_scale_min, 1.0),
            rotation_degrees=data_args.rotation_degrees,
            translate=data_args.translate,
            brightness=data_args.brightness,
            contrast=data_args.contrast,
            horizontal_flip=data_args.horizontal_flip,
        )
    report_embeds_column = "report_embeds" if report_embeddings is not None else None
    train_dataset = PretrainingDataset(
        train_dataset,
        image_processor,
        augmentation,
        seed=training_args.seed,
        report_embeds_column=report_embeds_column,
    )
    eval_labels = eval_study_ids = None
    if eval_dataset is not None:
        eval_labels = eval_dataset["labels"] if "labels" in eval_dataset.column_names else None
        eval_study_ids = eval_dataset["study_id"] if "study_id" in eval_dataset.column_names else None
        eval_dataset = PretrainingDataset(eval_dataset, image_processor, report_embeds_column=report_embeds_column)
    collator = SistaDataCollator(
        tokenizer,
        max_length=run_config.max_length,
        pad_to_multiple_of=model_args.pad_to_multiple_of,
        text_config=model.config.text_config,
        content_word_ids=model.config.sta_token_unit == "words",
    )

    trainer = SistaTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=processor,
    )
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()  # model, config, remote code, and the processor with its tokenizer
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
    eval_metrics = {}
    if eval_dataset is not None:
        metrics = trainer.evaluate()
        # one process runs the whole model: not possible while FSDP/DeepSpeed shard the weights
        if trainer.is_world_process_zero() and not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
            sista = trainer.accelerator.unwrap_model(trainer.model)
            metrics.update(retrieval_sanity(sista, eval_dataset, collator, eval_labels, study_ids=eval_study_ids))
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        eval_metrics = metrics

    if trainer.is_world_process_zero():
        output_dir = Path(training_args.output_dir).resolve()
        # the run configuration with each value's source, and the script's arguments as parsed, beside the Trainer's
        # training_args.bin (read by sista_examples.hub.model_card)
        run_arguments = {
            "run": run_config.to_record(),
            "model": asdict(model_args),
            "data": asdict(data_args),
            "report_embeddings": report_embeddings,
        }
        (output_dir / "run_arguments.json").write_text(json.dumps(run_arguments, indent=2, default=str) + "\n")
        curve = output_dir / "loss_curve.png"
        save_loss_curve(trainer.state.log_history, curve)
        summary = run_summary(trainer.state.log_history, eval_metrics)
        print(
            f"\nSISTA pre-training finished ({trainer.state.global_step} steps; {summary}).\n"
            f"  model + processor : {output_dir}  (SistaModel.from_pretrained / AutoModel + trust_remote_code=True)\n"
            f"  TensorBoard logs  : {output_dir / 'runs'}  (tensorboard --logdir {output_dir / 'runs'})\n"
            f"  loss curve        : {curve}\n"
            f"  metrics           : {output_dir}/*_results.json",
            flush=True,
        )
        push_after_training(hub_push, output_dir)
    return trainer


def run_summary(log_history: list[dict], eval_metrics: dict) -> str:
    """The training losses from first to last log and the final evaluation, or what the run did not do."""
    first = next((entry for entry in log_history if "loss" in entry), {})
    last = next((entry for entry in reversed(log_history) if "loss" in entry), {})
    parts = [f"{key} {first[key]:.3f} -> {last[key]:.3f}" for key in ("loss", "loss_sia", "loss_sta") if key in first]
    parts += [f"{key} {eval_metrics[key]:.3f}" for key in ("eval_loss", "retrieval_exact_top1") if key in eval_metrics]
    return "; ".join(parts) or "no loss logged: no training step and no evaluation"


def finish(trainer) -> None:
    """Leaves a multi-process run without gloo's sometimes-failing teardown at interpreter exit."""
    if trainer is not None and trainer.accelerator.num_processes > 1:
        trainer.accelerator.wait_for_everyone()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    finish(main())
