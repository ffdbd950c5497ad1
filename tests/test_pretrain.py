"""Tests of `examples/pretrain.py` and `sista_examples.training`: data pipeline, launch modes, gradient cache,
resume, bad input. Tiny configs (hidden 32, 32-pixel SynthCXR), a few optimizer steps each."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from datasets import DatasetDict
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor, TrainerCallback

from conftest import load_script, tiny_batch, tiny_sista_config
from configuration_sista import SistaConfig
from modeling_sista import SistaModel
from processing_sista import SistaImageProcessor
from sista_examples.data.metadata import update_dataset_metadata
from sista_examples.data.report_embeddings import default_threshold
from sista_examples.training.augmentation import XRayAugmentation
from sista_examples.data.report_fitting import count_truncated_reports
from sista_examples.training.collator import SistaDataCollator
from sista_examples.training.dataset import PretrainingDataset, normalize_pixel_values
from sista_examples.training.gradient_cache import gradient_cache_backward
from sista_examples.training.pretraining import (
    PretrainingDataArguments,
    PretrainingModelArguments,
    resolve_splits,
)
from sista_examples.training.run_config import resolve_run_config
from sista_examples.training.trainer import prepare_output_dir
from sista_examples.training.tokenizer import train_report_tokenizer


pretrain = load_script("examples/pretrain.py")


REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = [
    "--model_preset", "tiny", "--objective", "sista", "--logging_steps", "1", "--report_to", "none",
    "--seed", "1", "--disable_tqdm", "True", "--dataloader_num_workers", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_dataset_path(tmp_path_factory) -> str:
    """32-pixel SynthCXR with `report_embeds` in groups of near-duplicates, so SIA flags false negatives."""
    from sista_examples.data.synthcxr import generate_synthcxr

    dataset = generate_synthcxr(num_pretrain=48, num_train=0, num_validation=16, num_test=0, image_size=32, seed=0)
    rng = np.random.default_rng(0)
    for split in ("pretrain", "validation"):
        embeds = rng.normal(size=(len(dataset[split]), 16))
        embeds[1::4] = embeds[0::4][: len(embeds[1::4])]
        embeds /= np.linalg.norm(embeds, axis=1, keepdims=True)
        dataset[split] = dataset[split].add_column("report_embeds", embeds.tolist())
    path = tmp_path_factory.mktemp("data") / "tiny_synthcxr"
    dataset.save_to_disk(str(path))
    record = {"column": "report_embeds", "encoder": "random (test)", "dim": 16, "sia_threshold": 0.44,
              "threshold_source": "the test fixture"}  # fmt: skip
    update_dataset_metadata(path, report_embeddings=record)
    return str(path)


def logged_losses(output_dir) -> list[tuple[float, float, float]]:
    history = json.loads((Path(output_dir) / "trainer_state.json").read_text())["log_history"]
    return [(entry["loss"], entry["loss_sia"], entry["loss_sta"]) for entry in history if "loss" in entry]


def launch(arguments: list[str], tmp_path: Path, launcher: list[str] | None = None) -> None:
    """Runs pretrain.py in fresh processes: plain python, or `accelerate launch` with `launcher` arguments."""
    script = str(REPO_ROOT / "examples" / "pretrain.py")
    command = [sys.executable, script]
    if launcher is not None:
        command = [sys.executable, "-m", "accelerate.commands.launch", *launcher, "--main_process_port", "0", script]
    # `--cpu --num_processes 2` would start ONE process; ACCELERATE_USE_CPU with --multi_gpu starts two
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command + arguments, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


# ---------------------------------------------------------------------------------------------------------------------
# Data pipeline
# ---------------------------------------------------------------------------------------------------------------------


def test_augmentation_identity_and_no_flip():
    rng = np.random.default_rng(0)
    image = Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1)))  # bright on the right
    identity = XRayAugmentation(crop_scale=(1, 1), crop_ratio=(1, 1), rotation_degrees=0, translate=0)
    np.testing.assert_allclose(np.asarray(identity.geometric(image, rng), float), np.asarray(image, float), atol=1)

    default = XRayAugmentation()
    for _ in range(20):  # no horizontal flip: the right side stays the bright one
        warped = np.asarray(default.geometric(image, rng), float)
        assert warped.shape == (64, 64)
        assert warped[:, 40:56].mean() > warped[:, 8:24].mean() + 50

    pixel_values = torch.rand(3, 8, 8) * 2 - 1
    jitter_free = XRayAugmentation(brightness=0, contrast=0)
    torch.testing.assert_close(jitter_free.photometric(pixel_values, [0.5] * 3, [0.5] * 3, rng), pixel_values)
    jittered = XRayAugmentation(brightness=0.3, contrast=0.3).photometric(pixel_values, [0.5] * 3, [0.5] * 3, rng)
    assert jittered.min() >= -1 and jittered.max() <= 1 and not torch.allclose(jittered, pixel_values)

    with pytest.raises(ValueError, match="crop_scale"):
        XRayAugmentation(crop_scale=(0.5, 1.2))


def test_pretraining_dataset_and_collator(tiny_tokenizer):
    from datasets import Dataset, Features, Image as ImageFeature, List, Value

    images = [Image.fromarray(np.full((40, 40), value, dtype=np.uint8)) for value in (0, 255)]
    reports = ["No acute cardiopulmonary process.", "Small left pleural effusion."]
    features = Features({"image": ImageFeature(), "report": Value("string"), "report_embeds": List(Value("float32"))})
    raw = Dataset.from_dict({"image": images, "report": reports, "report_embeds": [[1, 0], [0, 1]]}, features=features)
    image_processor = SistaImageProcessor(size=32)
    dataset = PretrainingDataset(raw, image_processor)
    rows = dataset.__getitems__([0, 1])
    assert set(rows[0]) == {"pixel_values", "report", "report_embeds"}
    # 8-bit transport: one uint8 channel, normalised to the processor's values on the device
    torch.testing.assert_close(rows[0]["pixel_values"], torch.full((1, 32, 32), 0, dtype=torch.uint8))
    torch.testing.assert_close(rows[1]["pixel_values"], torch.full((1, 32, 32), 255, dtype=torch.uint8))

    batch = SistaDataCollator(tiny_tokenizer, max_length=6)(rows)
    assert batch["return_loss"] is True
    assert batch["pixel_values"].shape == (2, 1, 32, 32)
    normalized = normalize_pixel_values(batch["pixel_values"], image_processor.image_mean, image_processor.image_std, 3)
    torch.testing.assert_close(normalized[0], torch.full((3, 32, 32), -1.0))
    torch.testing.assert_close(normalized[1], torch.full((3, 32, 32), 1.0))
    torch.testing.assert_close(batch["report_embeds"], torch.eye(2))
    assert batch["input_ids"].shape == (2, 6)  # truncated to max_length
    assert tiny_tokenizer.convert_ids_to_tokens(batch["input_ids"][1].tolist()) == [
        "[CLS]", "small", "left", "pleural", "effusion", "[SEP]",
    ]  # fmt: skip


def test_truncation_cuts_the_findings_and_keeps_the_impression(tiny_tokenizer):
    from datasets import Dataset, Features, Image as ImageFeature, Value

    findings = "the heart size is normal. the lungs are clear. there is no pleural effusion."
    impression = "small left pneumothorax."
    reports = [f"{findings} {impression}", "no acute cardiopulmonary process."]
    features = Features({name: Value("string") for name in ("report", "findings", "impression")})
    features["image"] = ImageFeature()
    raw = Dataset.from_dict(
        {
            "image": [Image.new("L", (8, 8))] * 2,
            "report": reports,
            "findings": [findings, ""],
            "impression": [impression, ""],
        },
        features=features,
    )
    rows = PretrainingDataset(raw, SistaImageProcessor(size=32)).__getitems__([0, 1])
    assert rows[0]["impression"] == impression and rows[0]["findings"] == findings
    batch = SistaDataCollator(tiny_tokenizer, max_length=12)(rows)
    tokens = tiny_tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    impression_tokens = tiny_tokenizer.tokenize(impression)
    # the oracle: the findings' first tokens, then the whole impression, in 12 tokens with [CLS] and [SEP]
    kept_findings = tiny_tokenizer.tokenize(findings)[: 12 - 2 - len(impression_tokens)]
    assert tokens == ["[CLS]", *kept_findings, *impression_tokens, "[SEP]"]
    # a report that fits is tokenised as the plain tokenizer does
    plain = tiny_tokenizer([reports[1]], padding="max_length", max_length=12, truncation=True)["input_ids"][0]
    assert batch["input_ids"][1].tolist() == plain
    assert count_truncated_reports(tiny_tokenizer, reports, 12) == 1


def test_splits_are_found_not_assumed(caplog):
    from datasets import Dataset

    rows = Dataset.from_dict({"report": ["a"]})
    synthcxr = DatasetDict({"pretrain": rows, "train": rows, "validation": rows})
    mimic = DatasetDict({"train": rows, "validation": rows, "test": rows})
    no_validation = DatasetDict({"train": rows})
    with caplog.at_level("INFO"):
        synthcxr_args = PretrainingDataArguments(dataset_path="s")
        mimic_args = PretrainingDataArguments(dataset_path="m")
        assert resolve_splits(synthcxr, synthcxr_args, do_eval=True) == ("pretrain", "validation")
        assert resolve_splits(mimic, mimic_args, do_eval=True) == ("train", "validation")
    assert "Pre-training on split 'train' of m (found); evaluating on 'validation'." in caplog.text
    assert resolve_splits(mimic, PretrainingDataArguments(dataset_path="m"), do_eval=False) == ("train", None)
    assert resolve_splits(no_validation, PretrainingDataArguments(dataset_path="n"), do_eval=True) == ("train", None)
    given = PretrainingDataArguments(dataset_path="m", train_split="test", eval_split="train")
    assert resolve_splits(mimic, given, do_eval=True) == ("test", "train")
    with pytest.raises(ValueError, match="--train_split.*'other'"):
        resolve_splits(DatasetDict({"other": rows}), PretrainingDataArguments(dataset_path="o"), do_eval=True)


def test_a_previous_run_is_refused_or_replaced(tmp_path):
    previous = tmp_path / "run"
    (previous / "checkpoint-3").mkdir(parents=True)
    (previous / "runs").mkdir()
    for name in ("trainer_state.json", "eval_results.json", "loss_curve.png", "notes.txt"):
        (previous / name).write_text("old")
    with pytest.raises(ValueError, match="holds a previous run.*--overwrite_output_dir"):
        prepare_output_dir(str(previous), overwrite_output_dir=False, resume_from_checkpoint=None)
    prepare_output_dir(str(previous), overwrite_output_dir=False, resume_from_checkpoint="last")  # continues it
    assert (previous / "checkpoint-3").is_dir()
    prepare_output_dir(str(previous), overwrite_output_dir=True, resume_from_checkpoint=None)
    assert sorted(path.name for path in previous.iterdir()) == ["notes.txt"]  # not the run's: kept
    prepare_output_dir(str(tmp_path / "new"), overwrite_output_dir=False, resume_from_checkpoint=None)


def test_short_runs_log_every_step_and_long_ones_keep_their_interval():
    from transformers import TrainerState

    from sista_examples.training.trainer import DenseLoggingCallback

    for max_steps, logging_steps, expected in ((3, 10, 1), (100, 10, 5), (1000, 10, 10)):
        state = TrainerState(max_steps=max_steps, logging_steps=logging_steps)
        DenseLoggingCallback().on_train_begin(None, state, None)
        assert state.logging_steps == expected, max_steps


def test_augmentation_seeded_per_sample_and_epoch():
    from datasets import Dataset

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)) for _ in range(3)]
    raw = Dataset.from_dict({"image": images, "report": ["a", "b", "c"]})
    dataset = PretrainingDataset(raw, SistaImageProcessor(size=32), XRayAugmentation(), seed=7)
    first = torch.stack([row["pixel_values"] for row in dataset.__getitems__([0, 1, 2])])
    # another order and batching: the same draws per sample
    torch.testing.assert_close(dataset[2]["pixel_values"], first[2])
    torch.testing.assert_close(dataset.__getitems__([1, 0])[1]["pixel_values"], first[0])
    dataset.set_epoch(1)  # a new epoch: new draws
    assert not torch.equal(dataset[0]["pixel_values"], first[0])


def test_report_tokenizer_is_deterministic(tmp_path):
    reports = ["No acute cardiopulmonary process.", "Small LEFT pleural effusion.", "No acute process."] * 5
    first = train_report_tokenizer(reports, vocab_size=300, save_directory=tmp_path / "a")
    second = train_report_tokenizer(list(reversed(reports)), vocab_size=300, save_directory=tmp_path / "b")
    assert first.get_vocab() == second.get_vocab()
    assert first.tokenize("Small left pleural effusion, xyz.") == [
        "small", "left", "pleural", "effusion", ",", "x", "##y", "##z", ".",
    ]  # fmt: skip
    assert first.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "objective, sia_mode, sta_weight",
    [("clip", "off", 0.0), ("sia", "eliminate", 0.0), ("sta", "off", 1.0), ("sista", "eliminate", 1.0)],
)
def test_objectives(objective, sia_mode, sta_weight):
    given, _ = resolve_run_config(PretrainingModelArguments(objective=objective, sia_threshold=0.7))
    fields = given.sista_config_fields()
    assert (fields["sia_mode"], fields["sta_weight"], fields["sia_weight"]) == (sia_mode, sta_weight, 1.0)
    assert fields["sia_threshold"] == 0.7 and given.sources["sia_threshold"] == "given"
    # without --sia_threshold the config's default applies: the one of the default (label-vector) report encoders
    default, _ = resolve_run_config(PretrainingModelArguments(objective=objective))
    assert default.sia_threshold == SistaConfig().sia_threshold and default.sources["sia_threshold"] == "default"
    assert SistaConfig().sia_threshold == default_threshold("labeler") == default_threshold("labels")
    assert default.sta_negatives == SistaConfig().sta_negatives and default.sources["sta_negatives"] == "default"
    images, _ = resolve_run_config(PretrainingModelArguments(objective=objective, sta_negatives="images"))
    assert images.sta_negatives == "images" and images.sources["sta_negatives"] == "given"
    with pytest.raises(dataclasses.FrozenInstanceError):  # resolved once: nothing after the resolution changes it
        images.sia_threshold = 0.5


# ---------------------------------------------------------------------------------------------------------------------
# Gradient cache
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config_kwargs, dropout, chunk_size",
    [
        ({"sia_threshold": 0.5}, 0.0, 3),  # uneven chunks: 3 + 3 + 2
        ({"sta_weight": 0.0}, 0.0, 3),
        ({"sia_weight": 0.0}, 0.0, 3),
        # one chunk with dropout: equal only if the second pass replays the first pass's dropout masks
        ({"sia_threshold": 0.5}, 0.3, 8),
    ],
)
def test_gradient_cache_equals_full_batch(config_kwargs, dropout, chunk_size):
    torch.manual_seed(0)
    model = SistaModel(tiny_sista_config(**config_kwargs)).train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = dropout
    batch = tiny_batch(batch_size=8, seed=1)
    batch["report_embeds"][4:] = batch["report_embeds"][:4]  # false-negative pairs for SIA

    torch.manual_seed(1)
    outputs = model(**batch, return_loss=True)
    outputs.loss.backward()
    # without SIA the logit scale is frozen (requires_grad=False) and has no gradient in either path
    expected = {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.requires_grad}
    model.zero_grad()

    torch.manual_seed(1)
    losses = gradient_cache_backward(model, batch, chunk_size=chunk_size)
    torch.testing.assert_close(losses["loss"], outputs.loss.detach(), rtol=1e-5, atol=1e-6)
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            assert parameter.grad is None, name
            continue
        torch.testing.assert_close(parameter.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


# ---------------------------------------------------------------------------------------------------------------------
# Launch modes
# ---------------------------------------------------------------------------------------------------------------------


def test_two_processes_log_the_losses_of_one(tiny_dataset_path, tmp_path):
    """1 process x 8 samples vs 2 processes x 4 (gloo) under DDP, DDP with a gradient cache (chunks of 2) and FSDP2:
    the same global batches give the same logged losses step by step, and the same final weights."""
    # augmentations stay on: they are seeded per sample, so the launch mode does not change them
    common = TINY_ARGS + ["--dataset_path", tiny_dataset_path, "--max_steps", "3", "--save_strategy", "no"]
    half = ["--per_device_train_batch_size", "4"]
    ddp = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no"]  # fmt: skip
    fsdp = ["--config_file", str(REPO_ROOT / "examples" / "accelerate_configs" / "fsdp.yaml"),
            "--num_processes", "2", "--mixed_precision", "no"]  # fmt: skip
    launch(common + ["--output_dir", str(tmp_path / "one"), "--per_device_train_batch_size", "8"], tmp_path)
    launch(common + ["--output_dir", str(tmp_path / "ddp"), *half], tmp_path, ddp)
    cache = ["--gradient_cache_chunk_size", "2"]
    launch(common + ["--output_dir", str(tmp_path / "cache"), *half, *cache], tmp_path, ddp)
    launch(common + ["--output_dir", str(tmp_path / "fsdp"), *half], tmp_path, fsdp)

    one = logged_losses(tmp_path / "one")
    assert len(one) == 3 and one[-1][0] < one[0][0]
    for run in ("ddp", "cache", "fsdp"):
        np.testing.assert_allclose(logged_losses(tmp_path / run), one, atol=1e-4, err_msg=run)
    final = SistaModel.from_pretrained(tmp_path / "one").state_dict()
    for run in ("ddp", "fsdp"):
        weights = SistaModel.from_pretrained(tmp_path / run).state_dict()
        for name, tensor in final.items():
            torch.testing.assert_close(weights[name], tensor, rtol=0, atol=1e-5, msg=f"{run}: {name}")


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints, resume, loading
# ---------------------------------------------------------------------------------------------------------------------


class StopAfter(TrainerCallback):
    """Simulates a run killed after `step` optimizer steps (its checkpoint at that step is written first)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


@pytest.fixture(scope="module")
def resumed_runs(tiny_dataset_path, tmp_path_factory):
    """An uninterrupted 6-step run, and one stopped after step 3 then resumed from its checkpoint-3."""
    root = tmp_path_factory.mktemp("resume")
    common = TINY_ARGS + ["--dataset_path", tiny_dataset_path, "--max_steps", "6", "--save_steps", "3",
                          "--per_device_train_batch_size", "8", "--do_eval"]  # fmt: skip
    pretrain.main(common + ["--output_dir", str(root / "full")])

    class InterruptedTrainer(pretrain.SistaTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(StopAfter(3))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pretrain, "SistaTrainer", InterruptedTrainer)
        pretrain.main(common + ["--output_dir", str(root / "interrupted")])
    pretrain.main(
        common + ["--output_dir", str(root / "interrupted"), "--resume_from_checkpoint",
                  str(root / "interrupted" / "checkpoint-3")]
    )  # fmt: skip
    return root


def test_resume_reaches_the_weights_of_an_uninterrupted_run(resumed_runs):
    full = load_file(resumed_runs / "full" / "model.safetensors")
    resumed = load_file(resumed_runs / "interrupted" / "model.safetensors")
    checkpoint = load_file(resumed_runs / "interrupted" / "checkpoint-3" / "model.safetensors")
    assert full.keys() == resumed.keys()
    assert any(not torch.equal(full[name], checkpoint[name]) for name in full)  # steps 4-6 did train
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], rtol=0, atol=1e-6, msg=name)
    np.testing.assert_allclose(
        logged_losses(resumed_runs / "interrupted")[-3:], logged_losses(resumed_runs / "full")[-3:], atol=1e-5
    )


def test_resume_last_after_a_kill_while_saving_continues_from_the_last_complete_checkpoint(
    resumed_runs, tiny_dataset_path, tmp_path, caplog
):
    # the run was killed while writing checkpoint-6: its trainer_state.json (written last) is empty, and the run
    # never reached its final save
    import shutil

    killed = tmp_path / "killed"
    for name in ("checkpoint-3", "checkpoint-6"):
        shutil.copytree(resumed_runs / "full" / name, killed / name)
    (killed / "checkpoint-6" / "trainer_state.json").write_text("")
    common = TINY_ARGS + ["--dataset_path", tiny_dataset_path, "--max_steps", "6", "--save_steps", "3",
                          "--per_device_train_batch_size", "8", "--do_eval"]  # fmt: skip
    with caplog.at_level("WARNING"):
        pretrain.main(common + ["--output_dir", str(killed), "--resume_from_checkpoint", "last"])
    assert f"resuming from {killed / 'checkpoint-3'}, the newest complete checkpoint" in caplog.text
    assert "checkpoint-6 (" in caplog.text and "trainer_state.json is not readable JSON" in caplog.text
    full = load_file(resumed_runs / "full" / "model.safetensors")
    resumed = load_file(killed / "model.safetensors")
    assert full.keys() == resumed.keys()
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], rtol=0, atol=1e-6, msg=name)
    assert json.loads((killed / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6


def test_output_dir_loads_with_auto_classes(resumed_runs):
    output_dir = resumed_runs / "full"
    assert (output_dir / "loss_curve.png").stat().st_size > 0
    assert json.loads((output_dir / "eval_results.json").read_text())["eval_loss_sia"] > 0
    model = AutoModel.from_pretrained(output_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(output_dir, trust_remote_code=True)
    reference = SistaModel.from_pretrained(output_dir).eval()
    inputs = processor(
        text=["No acute cardiopulmonary process."], images=[np.zeros((32, 32), np.uint8)], return_tensors="pt"
    )
    assert processor.tokenizer.unk_token_id not in inputs["input_ids"][0].tolist()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits_per_image, reference(**inputs).logits_per_image)


def test_pretrained_processor_truncates_a_500_word_report_to_the_text_tower(resumed_runs):
    """The README quick start on pretrain's own output: a report longer than the text tower's positions is truncated
    by the saved tokenizer, and the scores equal those of the report cut by hand to that many tokens."""
    output_dir = resumed_runs / "full"
    model = AutoModel.from_pretrained(output_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(output_dir, trust_remote_code=True)
    limit = model.config.text_config.max_position_embeddings
    assert processor.tokenizer.model_max_length == limit
    report = " ".join(["No pleural effusion or pneumothorax and the heart size is normal."] * 50)  # 550 words
    image = [np.zeros((32, 32), np.uint8)]
    inputs = processor(text=[report], images=image, return_tensors="pt", padding=True)
    assert inputs["input_ids"].shape[1] == limit
    ids = processor.tokenizer(report, add_special_tokens=False)["input_ids"][: limit - 2]
    by_hand = processor(text=[processor.tokenizer.decode(ids)], images=image, return_tensors="pt")
    torch.testing.assert_close(inputs["input_ids"], by_hand["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits_per_image, model(**by_hand).logits_per_image)


def test_pretraining_continues_from_a_whole_sista_checkpoint(resumed_runs, tiny_dataset_path, tmp_path):
    from transformers import AutoTokenizer

    start = resumed_runs / "full"
    output_dir = tmp_path / "continued"
    # learning rate 0: the one step changes nothing, so the output must be the starting checkpoint, projections
    # and logit scale included; this run's objective and pooling replace the checkpoint's where given
    pretrain.main(
        TINY_ARGS + ["--dataset_path", tiny_dataset_path, "--model_name_or_path", str(start), "--objective", "clip",
                     "--text_pooling", "mean", "--learning_rate", "0", "--max_steps", "1", "--save_strategy", "no",
                     "--output_dir", str(output_dir)]
    )  # fmt: skip
    started, continued = load_file(start / "model.safetensors"), load_file(output_dir / "model.safetensors")
    assert started.keys() == continued.keys()
    for name in started:
        assert torch.equal(started[name], continued[name]), name
    config = json.loads((output_dir / "config.json").read_text())
    assert config["sta_weight"] == 0.0 and config["sia_mode"] == "off"  # --objective clip
    assert config["text_pooling"] == "mean" and config["vision_pooling"] == "cls"  # given / kept
    assert AutoTokenizer.from_pretrained(output_dir).get_vocab() == AutoTokenizer.from_pretrained(start).get_vocab()


def test_a_bad_starting_checkpoint_is_named_before_training(resumed_runs, tiny_dataset_path, tmp_path):
    from transformers import ViTConfig

    common = TINY_ARGS + ["--dataset_path", tiny_dataset_path, "--output_dir", str(tmp_path / "o")]
    ViTConfig().save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match=r"--model_name_or_path .*vit.* holds a 'vit' model, expected a 'sista'"):
        pretrain.main(common + ["--model_name_or_path", str(tmp_path / "vit")])
    start = str(resumed_runs / "full")
    with pytest.raises(ValueError, match=r"--image_size 64 differs from the 32 px of --model_name_or_path"):
        pretrain.main(common + ["--model_name_or_path", start, "--image_size", "64"])
    with pytest.raises(ValueError, match=r"--model_name_or_path \(a whole SISTA checkpoint\) excludes"):
        pretrain.main(common + ["--model_name_or_path", start, "--vision_model_name_or_path", str(tmp_path / "vit"),
                                "--text_model_name_or_path", str(tmp_path / "vit")])  # fmt: skip
    with pytest.raises(ValueError, match="sia_threshold"):
        pretrain.main(common + ["--model_name_or_path", start, "--objective", "sia", "--sia_threshold", "-3"])


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: a clear error before training
# ---------------------------------------------------------------------------------------------------------------------


def test_dataset_without_report_column(tiny_dataset_path, tmp_path):
    from datasets import load_from_disk

    dataset = load_from_disk(tiny_dataset_path)
    dataset["pretrain"] = dataset["pretrain"].remove_columns("report")
    dataset.save_to_disk(str(tmp_path / "no_report"))
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['report'\].*found \["):
        pretrain.main(TINY_ARGS + ["--dataset_path", str(tmp_path / "no_report"), "--output_dir", str(tmp_path / "o")])


def test_output_dir_not_writable(tiny_dataset_path, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="is not writable"):
        pretrain.main(TINY_ARGS + ["--dataset_path", tiny_dataset_path, "--output_dir", str(blocker / "out")])


def test_resume_from_checkpoint_of_another_model(resumed_runs, tiny_dataset_path, tmp_path):
    checkpoint = resumed_runs / "full" / "checkpoint-3"
    with pytest.raises(ValueError, match=r"different model.*projection_dim: checkpoint 16 vs this run 8"):
        pretrain.main(
            TINY_ARGS + ["--dataset_path", tiny_dataset_path, "--output_dir", str(tmp_path / "o"), "--projection_dim",
                         "8", "--resume_from_checkpoint", str(checkpoint), "--max_steps", "6"]
        )  # fmt: skip


def test_tfidf_report_embeds_added_when_missing(tiny_dataset_path, tmp_path):
    """Computed by pretrain itself, the embeddings are those of the separate step with its defaults: TF-IDF fitted on
    every split, the same projection whatever the training seed."""
    from datasets import load_from_disk

    dataset = load_from_disk(tiny_dataset_path)
    for split in dataset:
        dataset[split] = dataset[split].remove_columns("report_embeds")
    dataset.save_to_disk(str(tmp_path / "no_embeds"))
    pretrain.main(
        TINY_ARGS + ["--dataset_path", str(tmp_path / "no_embeds"), "--output_dir", str(tmp_path / "o"),
                     "--max_steps", "2", "--save_strategy", "no", "--report_encoder", "tfidf"]
    )  # fmt: skip
    assert len(logged_losses(tmp_path / "o")) == 2
    record = json.loads((tmp_path / "o" / "run_arguments.json").read_text())["report_embeddings"]
    assert record["encoder"] == "tfidf" and record["fitted_on"] == ["pretrain", "validation"]
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert record["sia_threshold"] == default_threshold("tfidf") == config["sia_threshold"]

    from sista_examples.training.pretraining import PretrainingDataArguments, prepare_report_embeddings

    separate_step = load_script("examples/report_embeddings.py")
    separate_step.main(["--dataset_dir", str(tmp_path / "no_embeds"), "--output_dir", str(tmp_path / "embedded"),
                        "--encoder", "tfidf"])  # fmt: skip
    stored = load_from_disk(str(tmp_path / "embedded"))
    data_args = PretrainingDataArguments(dataset_path=str(tmp_path / "no_embeds"), report_encoder="tfidf")
    training_args = pretrain.SistaTrainingArguments(output_dir=str(tmp_path / "p"), seed=1, report_to="none")
    run_config, _ = resolve_run_config(PretrainingModelArguments(), data_args, training_args)
    assert run_config.report_embeddings["compute"] and run_config.sources["report_encoder"] == "given"
    in_run, _ = prepare_report_embeddings(dataset, run_config, data_args, training_args)
    for split in dataset:
        np.testing.assert_allclose(in_run[split]["report_embeds"], stored[split]["report_embeds"], atol=1e-6)


def test_pretrain_uses_the_threshold_stored_with_the_embeddings(tiny_dataset_path, tmp_path, caplog):
    from datasets import load_from_disk

    # a prepared dataset whose report embeddings were computed by examples/report_embeddings.py with its threshold
    source = tmp_path / "prepared"
    load_from_disk(tiny_dataset_path).save_to_disk(str(source))
    load_script("examples/report_embeddings.py").main(
        ["--dataset_dir", str(source), "--overwrite_column", "true", "--sia_threshold", "0.87"]
    )
    common = TINY_ARGS + ["--dataset_path", str(source), "--max_steps", "1", "--save_strategy", "no"]
    with caplog.at_level("INFO"):
        pretrain.main(common + ["--output_dir", str(tmp_path / "stored")])
    assert json.loads((tmp_path / "stored" / "config.json").read_text())["sia_threshold"] == 0.87
    recorded = json.loads((tmp_path / "stored" / "run_arguments.json").read_text())
    assert recorded["run"]["sia_threshold"] == {"value": 0.87, "source": "dataset"}
    assert recorded["run"]["report_encoder"] == {"value": "labels", "source": "dataset"}
    assert recorded["run"]["train_split"] == {"value": "pretrain", "source": "dataset"}
    assert recorded["run"]["image_size"]["source"] == "default"
    # the parsed arguments are recorded as parsed: nothing was written back into them
    assert recorded["model"]["sia_threshold"] is None and recorded["data"]["train_split"] is None
    assert (
        f"SIA report embeddings: encoder labels ({source}/sista_dataset.json); sia_threshold=0.87 from "
        f"{source}/sista_dataset.json (--sia_threshold of examples/report_embeddings.py)." in caplog.text
    )
    caplog.clear()
    with caplog.at_level("INFO"):  # an explicit --sia_threshold wins, and says so
        pretrain.main(common + ["--output_dir", str(tmp_path / "given"), "--sia_threshold", "0.5"])
    assert json.loads((tmp_path / "given" / "config.json").read_text())["sia_threshold"] == 0.5
    recorded = json.loads((tmp_path / "given" / "run_arguments.json").read_text())["run"]
    assert recorded["sia_threshold"] == {"value": 0.5, "source": "given"}
    assert "sia_threshold=0.5 from --sia_threshold." in caplog.text
