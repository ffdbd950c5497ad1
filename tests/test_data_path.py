"""Tests of the pre-training data path: one warp to the model's size, 8-bit transport normalised on the device, the
epoch reaching (persistent) loader workers under 1 and 2 processes, the collator's CPU checks, and the trainer's
weight decay, final weights and checkpoint checks."""

import collections
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image
from safetensors import safe_open
from transformers import Trainer

from conftest import build_tiny_tokenizer, tiny_sista_config
from modeling_sista import SistaModel
from processing_sista import SistaImageProcessor, SistaProcessor
from sista_examples.training.augmentation import XRayAugmentation
from sista_examples.training.collator import SistaDataCollator
from sista_examples.training.dataset import PretrainingDataset, decode_at_reduced_scale, normalize_pixel_values
from sista_examples.training.pretraining import PretrainingModelArguments, build_model, drop_empty_reports
from sista_examples.training.run_config import resolve_run_config
from sista_examples.training.trainer import SistaTrainer, SistaTrainingArguments, check_checkpoint_matches


REPO_ROOT = Path(__file__).resolve().parent.parent


def smooth_image(height: int, width: int) -> np.ndarray:
    rows, columns = np.mgrid[0:height, 0:width]
    return (127 + 100 * np.sin(columns / 9.0) * np.cos(rows / 7.0)).astype(np.uint8)


def dataset_of(images, reports=None) -> Dataset:
    reports = reports or ["small left effusion"] * len(images)
    return Dataset.from_dict({"image": [Image.fromarray(image) for image in images], "report": reports})


def model_input(pixel_values: torch.Tensor, image_processor) -> torch.Tensor:
    return normalize_pixel_values(pixel_values, image_processor.image_mean, image_processor.image_std, 3)


# ---------------------------------------------------------------------------------------------------------------------
# One warp to the model's size, 8-bit transport
# ---------------------------------------------------------------------------------------------------------------------


def test_image_at_model_size_travels_exactly():
    image = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    image_processor = SistaImageProcessor(size=32)
    pixel_values = PretrainingDataset(dataset_of([image]), image_processor)[0]["pixel_values"]
    assert pixel_values.dtype == torch.uint8 and pixel_values.shape == (1, 32, 32)
    np.testing.assert_array_equal(pixel_values[0].numpy(), image)
    expected = image_processor(Image.fromarray(image), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(model_input(pixel_values[None], image_processor), expected)


@pytest.mark.parametrize("shape", [(64, 64), (64, 96), (96, 48)])
def test_one_warp_matches_the_processor(shape):
    """The composed warp (box reduction + one bilinear map, padding black) against the processor's float resize."""
    image = smooth_image(*shape)
    image_processor = SistaImageProcessor(size=32)
    pixel_values = PretrainingDataset(dataset_of([image]), image_processor)[0]["pixel_values"]
    expected = image_processor(Image.fromarray(image), return_tensors="pt")["pixel_values"]
    difference = (model_input(pixel_values[None], image_processor) - expected).abs()
    # normalised units span 2: 0.01 is about 1.3 grey levels of 255
    assert difference.mean() < 0.01 and difference.max() < 0.06
    # the padding stays black exactly
    padded = expected[0, 0] == -1
    assert padded.any() == (shape[0] != shape[1])
    assert (pixel_values[0][padded] == 0).all()


@pytest.mark.parametrize("shape", [(64, 64), (64, 96)])
def test_augmentation_composed_with_resize_matches_two_steps(shape):
    """Augmentation + resize as one warp against the augmentation warped at the stored size then the processor."""
    image = smooth_image(*shape)
    image_processor = SistaImageProcessor(size=32)
    augmentation = XRayAugmentation()
    dataset = PretrainingDataset(dataset_of([image]), image_processor, augmentation, seed=3)
    one_warp = model_input(dataset[0]["pixel_values"][None], image_processor)[0]

    rng = np.random.default_rng([3, 0, 0])  # the dataset's seed for (seed, epoch 0, sample 0)
    warped = augmentation.geometric(Image.fromarray(image), rng)
    two_steps = image_processor(warped, return_tensors="pt")["pixel_values"][0]
    two_steps = augmentation.photometric(two_steps, image_processor.image_mean, image_processor.image_std, rng)
    difference = (one_warp - two_steps).abs()
    assert difference.mean() < 0.01 and difference.max() < 0.06
    # and it is not the un-augmented image
    plain = image_processor(Image.fromarray(image), return_tensors="pt")["pixel_values"][0]
    assert (one_warp - plain).abs().mean() > 0.05


def test_jpeg_decoded_at_reduced_scale_matches_the_processor():
    """A 128 px JPEG for a 32 px frame is decoded at 1/4 scale by its DCT and still matches the processor's resize
    of the fully decoded image."""
    import io

    from datasets import Features, Image as ImageFeature, Value

    buffer = io.BytesIO()
    Image.fromarray(smooth_image(128, 128)).save(buffer, format="JPEG", quality=95)
    features = Features({"image": ImageFeature(), "report": Value("string")})
    raw = Dataset.from_dict({"image": [{"bytes": buffer.getvalue(), "path": None}], "report": ["a"]}, features=features)
    image_processor = SistaImageProcessor(size=32)
    pixel_values = PretrainingDataset(raw, image_processor)[0]["pixel_values"]
    expected = image_processor(Image.open(io.BytesIO(buffer.getvalue())), return_tensors="pt")["pixel_values"]
    difference = (model_input(pixel_values[None], image_processor) - expected).abs()
    assert difference.mean() < 0.01 and difference.max() < 0.06

    lazy = Image.open(io.BytesIO(buffer.getvalue()))
    reduced, coefficients = decode_at_reduced_scale(lazy, (4.0, 0.0, 0.0, 0.0, 4.0, 0.0))
    assert reduced.size == (32, 32) and coefficients == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def test_undecodable_image_is_named():
    from datasets import Features, Image as ImageFeature, Value

    features = Features({"image": ImageFeature(), "report": Value("string")})
    rows = {"image": [{"bytes": b"not an image", "path": None}], "report": ["a"]}
    dataset = PretrainingDataset(Dataset.from_dict(rows, features=features), SistaImageProcessor(size=8))
    with pytest.raises(ValueError, match="Sample 0 of the dataset: its `image` is unusable"):
        dataset[0]


def test_high_bit_depth_images_are_windowed_like_the_processor():
    image = (smooth_image(32, 32).astype(np.uint16) * 200 + 1000).astype(np.uint16)
    image_processor = SistaImageProcessor(size=32)
    pixel_values = PretrainingDataset(dataset_of([image]), image_processor)[0]["pixel_values"]
    expected = image_processor(Image.fromarray(image), return_tensors="pt")["pixel_values"]
    # 8-bit quantisation of the windowed intensities: half a grey level
    torch.testing.assert_close(model_input(pixel_values[None], image_processor), expected, atol=1 / 255 + 1e-6, rtol=0)


def test_normalize_pixel_values_errors_and_passthrough():
    floats = torch.rand(2, 3, 8, 8)
    assert normalize_pixel_values(floats, [0.5], [0.5], 3) is floats
    with pytest.raises(ValueError, match=r"uint8 of shape \(batch_size, 1, height, width\)"):
        normalize_pixel_values(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [0.5], [0.5], 3)
    with pytest.raises(ValueError, match="do_rescale"):
        PretrainingDataset(dataset_of([smooth_image(8, 8)]), SistaImageProcessor(size=8, do_rescale=False))


# ---------------------------------------------------------------------------------------------------------------------
# The epoch reaches the loader workers
# ---------------------------------------------------------------------------------------------------------------------


def test_epoch_reaches_persistent_workers():
    images = [np.random.default_rng(index).integers(0, 256, (32, 32), dtype=np.uint8) for index in range(4)]
    dataset = PretrainingDataset(dataset_of(images), SistaImageProcessor(size=32), XRayAugmentation(), seed=5)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=4, num_workers=1, persistent_workers=True, collate_fn=lambda rows: rows
    )
    by_epoch = []
    for epoch in range(2):
        dataset.set_epoch(epoch)
        (rows,) = list(loader)
        by_epoch.append(torch.stack([row["pixel_values"] for row in rows]))
    # the worker started in epoch 0 saw epoch 1: its draws are the main process's for epoch 1
    expected = torch.stack([row["pixel_values"] for row in dataset.__getitems__([0, 1, 2, 3])])
    torch.testing.assert_close(by_epoch[1], expected)
    dataset.set_epoch(0)
    expected = torch.stack([row["pixel_values"] for row in dataset.__getitems__([0, 1, 2, 3])])
    torch.testing.assert_close(by_epoch[0], expected)
    assert not torch.equal(by_epoch[0], by_epoch[1])


def test_two_processes_two_epochs_change_the_augmentation(tmp_path):
    """accelerate launch, 2 CPU processes x 2 epochs, one persistent worker each: on both ranks the dataset (in its
    worker) sees epochs 0 and 1, and every sample's augmented pixels differ between the two epochs; the ranks start
    from the same weights with different seeds."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        str(REPO_ROOT / "tests" / "epoch_worker.py"), str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT / "tests", env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    seen_indices = set()
    for rank in (0, 1):
        lines = (tmp_path / f"samples_rank{rank}.txt").read_text().split()
        records = [tuple(int(value) for value in lines[i : i + 4]) for i in range(0, len(lines), 4)]
        pids = {pid for *_, pid in records}
        assert os.getpid() not in pids  # produced by loader workers
        checksums = collections.defaultdict(dict)
        for epoch, index, checksum, _ in records:
            checksums[index][epoch] = checksum
        assert {epoch for epoch, *_ in records} == {0, 1}, f"rank {rank}"
        # 16 samples over 2 ranks: each rank sees 8 per epoch (the sampler reshuffles, so the sets can differ)
        both = [index for index, per_epoch in checksums.items() if len(per_epoch) == 2]
        assert both, f"rank {rank}: no sample seen in both epochs"
        for index in both:
            assert checksums[index][0] != checksums[index][1], f"rank {rank}, sample {index}: same augmentation"
        seen_indices |= set(checksums)
    assert seen_indices == set(range(16))
    (weights_0, seed_0), (weights_1, seed_1) = (
        (tmp_path / f"seeds_rank{rank}.txt").read_text().split() for rank in (0, 1)
    )
    assert weights_0 == weights_1 and seed_0 != seed_1  # same initial weights, own dropout seed per rank


def test_tokenizer_and_report_embeds_built_once_for_two_processes(tmp_path):
    """pretrain.py on 2 processes with neither a tokenizer nor `report_embeds`: the global main process builds both
    and the other reads them (report_embeds from output_dir/report_embeds/); the logged losses are those of one
    process holding both halves of each batch, so both processes used the same vocabulary and embeddings."""
    from sista_examples.data.synthcxr import generate_synthcxr
    from test_pretrain import TINY_ARGS, launch, logged_losses

    dataset = generate_synthcxr(num_pretrain=32, num_train=0, num_validation=0, num_test=0, image_size=32, seed=0)
    dataset.save_to_disk(str(tmp_path / "data"))
    common = TINY_ARGS + ["--dataset_path", str(tmp_path / "data"), "--max_steps", "2", "--save_strategy", "no"]
    two_processes = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                     "--dynamo_backend", "no"]  # fmt: skip
    launch(common + ["--output_dir", str(tmp_path / "one"), "--per_device_train_batch_size", "8"], tmp_path)
    launch(common + ["--output_dir", str(tmp_path / "two"), "--per_device_train_batch_size", "4"], tmp_path,
           two_processes)  # fmt: skip
    shared = np.load(tmp_path / "two" / "report_embeds" / "pretrain.npy")
    assert shared.shape[0] == 32 and np.isfinite(shared).all()
    assert (tmp_path / "two" / "report_embeds" / "record.json").is_file()
    assert not (tmp_path / "one" / "report_embeds").exists()  # one process shares nothing
    np.testing.assert_allclose(logged_losses(tmp_path / "two"), logged_losses(tmp_path / "one"), atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------------
# Collator
# ---------------------------------------------------------------------------------------------------------------------


def test_collator_refuses_reports_without_word_tokens_and_pads_to_a_multiple():
    tokenizer = build_tiny_tokenizer()
    frame = {"pixel_values": torch.zeros(1, 8, 8, dtype=torch.uint8)}
    collator = SistaDataCollator(tokenizer, max_length=16, pad_to_multiple_of=8)
    batch = collator([{**frame, "report": "small left effusion"}, {**frame, "report": "effusion"}])
    assert batch["input_ids"].shape == (2, 8) and batch["pixel_values"].dtype == torch.uint8
    # the same tokens as without padding to a multiple, then padding
    plain = SistaDataCollator(tokenizer, max_length=16)([{**frame, "report": "small left effusion"}])
    width = plain["input_ids"].shape[1]
    torch.testing.assert_close(batch["input_ids"][0, :width], plain["input_ids"][0])
    assert (batch["attention_mask"][0, width:] == 0).all()

    with pytest.raises(ValueError, match=r"rows \[1\].*''"):
        collator([{**frame, "report": "effusion"}, {**frame, "report": ""}])
    # the library's checks, on the CPU batch: report embeddings, and ids against the text tower
    with pytest.raises(ValueError, match="report_embeds` must be finite"):
        collator([{**frame, "report": "effusion", "report_embeds": [1.0, float("nan")]}])
    small_vocabulary = tiny_sista_config().text_config
    small_vocabulary.vocab_size = 5
    with pytest.raises(ValueError, match="vocab"):
        SistaDataCollator(tokenizer, text_config=small_vocabulary)([{**frame, "report": "effusion"}])
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        SistaDataCollator(tokenizer, pad_to_multiple_of=0)
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        PretrainingModelArguments(max_length=100, pad_to_multiple_of=8)


def test_empty_reports_are_dropped_with_a_count(caplog):
    images = [smooth_image(8, 8)] * 4
    dataset = dataset_of(images, ["effusion", "", "   ", "no effusion"])
    with caplog.at_level("WARNING"):
        kept = drop_empty_reports(dataset, "pretrain")
    assert kept["report"] == ["effusion", "no effusion"]
    assert "dropped 2 of 4 rows whose report has no content" in caplog.text


# ---------------------------------------------------------------------------------------------------------------------
# Trainer: weight decay, device normalisation, final weights, checkpoint checks
# ---------------------------------------------------------------------------------------------------------------------


def tiny_trainer(tmp_path, **arguments) -> SistaTrainer:
    image_processor = SistaImageProcessor(size=32)
    tokenizer = build_tiny_tokenizer()
    images = [np.random.default_rng(index).integers(0, 256, (32, 32), dtype=np.uint8) for index in range(4)]
    args = SistaTrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, weight_decay=0.1, per_device_train_batch_size=2,
        max_steps=1, save_strategy="no", disable_tqdm=True, **arguments,
    )  # fmt: skip
    return SistaTrainer(
        model=SistaModel(tiny_sista_config(sia_mode="off")),
        args=args,
        train_dataset=PretrainingDataset(dataset_of(images), image_processor),
        data_collator=SistaDataCollator(tokenizer, max_length=8),
        processing_class=SistaProcessor(image_processor=image_processor, tokenizer=tokenizer),
    )


def test_no_weight_decay_on_biases_norms_and_logit_scale(tmp_path):
    trainer = tiny_trainer(tmp_path)
    optimizer = trainer.create_optimizer()
    names = {id(parameter): name for name, parameter in trainer.model.named_parameters()}
    decayed, not_decayed = set(), set()
    for group in optimizer.param_groups:
        (decayed if group["weight_decay"] > 0 else not_decayed).update(names[id(p)] for p in group["params"])
    assert decayed | not_decayed == set(names.values())
    assert "logit_scale" in not_decayed
    assert {name for name in names.values() if name.endswith("bias") or "LayerNorm" in name} <= not_decayed
    assert "text_model.embeddings.word_embeddings.weight" in decayed and "visual_projection.weight" in decayed


def test_trainer_normalises_uint8_on_the_device_and_keeps_report_embeds_float32(tmp_path):
    trainer = tiny_trainer(tmp_path)
    image_processor = trainer.processing_class.image_processor
    pixel_values = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    report_embeds = torch.randn(2, 4, dtype=torch.float64)
    inputs = trainer._prepare_inputs({"pixel_values": pixel_values, "report_embeds": report_embeds})
    expected = image_processor([Image.fromarray(image[0].numpy()) for image in pixel_values], return_tensors="pt")
    torch.testing.assert_close(inputs["pixel_values"], expected["pixel_values"])
    assert inputs["report_embeds"].dtype == torch.float32


def test_input_step_and_loss_logging_read_nothing_back_until_logged(tmp_path, monkeypatch):
    """`_prepare_inputs` and the loss-component sums never read a tensor's value on the host (patched to raise);
    `log` then reports the mean of the accumulated components (the naive mean as oracle)."""
    trainer = tiny_trainer(tmp_path)
    batch = trainer.data_collator(trainer.train_dataset.__getitems__([0, 1]))
    steps = [(torch.tensor(2.0), torch.tensor(0.5)), (torch.tensor(3.0), torch.tensor(1.5))]

    def host_read(*args, **kwargs):
        raise AssertionError("a tensor value was read on the host")

    with monkeypatch.context() as patched:
        for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
            patched.setattr(torch.Tensor, name, host_read)
        inputs = trainer._prepare_inputs(batch)
        for loss_sia, loss_sta in steps:
            trainer._accumulate_components(loss_sia, loss_sta, training=True)
    assert inputs["pixel_values"].dtype == torch.float32 and inputs["pixel_values"].shape == (2, 3, 32, 32)

    logged = {}
    # Trainer.log's own handling (callbacks, history) is not under test
    monkeypatch.setattr(Trainer, "log", lambda self, logs, start_time=None: logged.update(logs))
    trainer.log({"loss": 0.0})
    assert logged["loss_sia"] == pytest.approx(np.mean([2.0, 3.0]))
    assert logged["loss_sta"] == pytest.approx(np.mean([0.5, 1.5]))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_final_weights_in_the_asked_dtype(tmp_path, dtype):
    trainer = tiny_trainer(tmp_path, final_weights_dtype=dtype)
    trainer.train()
    trainer.save_model()
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as weights:
        tensors = [weights.get_tensor(name) for name in weights.keys()]
    dtypes = {tensor.dtype for tensor in tensors if tensor.is_floating_point()}
    assert dtypes == {getattr(torch, dtype)}
    reloaded = SistaModel.from_pretrained(tmp_path, dtype=torch.float32).state_dict()
    for name, tensor in trainer.model.state_dict().items():
        torch.testing.assert_close(reloaded[name], tensor.to(getattr(torch, dtype)).float(), rtol=0, atol=0, msg=name)


def test_resume_check_accepts_a_sharded_fsdp_checkpoint(tmp_path):
    model = SistaModel(tiny_sista_config())
    model.config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no config.json and model weights"):
        check_checkpoint_matches(model, tmp_path)
    (tmp_path / "pytorch_model_fsdp_0").mkdir()
    check_checkpoint_matches(model, tmp_path)
    other = SistaModel(tiny_sista_config(projection_dim=8))
    with pytest.raises(ValueError, match="projection_dim: checkpoint 16 vs this run 8"):
        check_checkpoint_matches(other, tmp_path)


def test_projection_dim_of_pretrained_backbones_comes_from_their_widths(tmp_path):
    config = tiny_sista_config()
    from transformers import BertModel, ViTModel

    ViTModel(config.vision_config).save_pretrained(tmp_path / "vision")
    text_config = config.text_config
    text_config.hidden_size, text_config.intermediate_size = 48, 96
    BertModel(text_config, add_pooling_layer=False).save_pretrained(tmp_path / "text")
    arguments = {
        "vision_model_name_or_path": str(tmp_path / "vision"),
        "text_model_name_or_path": str(tmp_path / "text"),
    }
    run_config, _ = resolve_run_config(PretrainingModelArguments(**arguments))
    assert run_config.sources["projection_dim"] == "checkpoint"
    model = build_model(run_config, build_tiny_tokenizer())
    assert model.config.projection_dim == 32  # the narrower of 32 and 48, not the small preset's 128
    chosen_config, _ = resolve_run_config(PretrainingModelArguments(projection_dim=24, **arguments))
    chosen = build_model(chosen_config, build_tiny_tokenizer())
    assert chosen.config.projection_dim == 24


def test_sta_token_mask_reuses_its_ignored_ids_and_follows_the_config():
    model = SistaModel(tiny_sista_config(sta_ignore_token_ids=[0, 2, 3]))
    input_ids = torch.tensor([[2, 7, 8, 3, 0], [2, 9, 3, 0, 0]])
    attention_mask = (input_ids != 0).long()
    naive = [[bool(mask) and token not in (0, 2, 3) for token, mask in zip(row, masks)]
             for row, masks in zip(input_ids.tolist(), attention_mask.tolist())]  # fmt: skip
    assert model.sta_token_mask(input_ids, attention_mask).tolist() == naive
    ignored = model._sta_ignored_ids(input_ids.device)
    model.sta_token_mask(input_ids, attention_mask)
    assert model._sta_ignored_ids(input_ids.device) is ignored  # built once, not per step
    model.config.sta_ignore_token_ids = [0, 2, 3, 7]
    assert model.sta_token_mask(input_ids, attention_mask)[0].tolist() == [False, False, True, False, False]
