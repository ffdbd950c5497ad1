"""Training at scale: FSDP2 (2 gloo processes against one), losses in float32 under bf16 autocast, a logit scale of
shape (1,) that still loads older scalar checkpoints, losses and gather that compile without graph breaks, and the
GPU benchmark's CPU smoke run."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from conftest import (
    SPECIAL_TOKEN_IDS,
    load_script,
    run_two_processes,
    tiny_batch,
    tiny_sista_config,
    without_dropout,
)
from modeling_sista import SistaModel, false_negative_mask, sia_loss, sta_loss


def tiny_model(**config_kwargs) -> SistaModel:
    torch.manual_seed(0)
    return SistaModel(tiny_sista_config(**config_kwargs)).eval()


def has_cpp_compiler() -> bool:
    return shutil.which(os.environ.get("CXX", "g++")) is not None


# --------------------------------------------------------------------------------------------------------------------
# Logit scale of shape (1,); input embeddings
# --------------------------------------------------------------------------------------------------------------------


def test_a_checkpoint_with_a_scalar_logit_scale_loads_unchanged(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.logit_scale.fill_(1.25)
    model.save_pretrained(tmp_path)
    weights_file = tmp_path / "model.safetensors"
    state_dict = load_file(weights_file)
    assert state_dict["logit_scale"].shape == (1,)
    state_dict["logit_scale"] = state_dict["logit_scale"].reshape(())  # as older checkpoints stored it
    save_file(state_dict, weights_file, metadata={"format": "pt"})

    loaded = SistaModel.from_pretrained(tmp_path).eval()
    assert loaded.logit_scale.shape == (1,) and loaded.logit_scale.item() == 1.25
    batch = tiny_batch()
    with torch.no_grad():
        expected, got = model(**batch, return_loss=True), loaded(**batch, return_loss=True)
    assert torch.equal(expected.loss, got.loss) and torch.equal(expected.logits_per_image, got.logits_per_image)


def test_logits_scale_like_a_scalar_and_keep_the_embeddings_dtype():
    model = tiny_model()
    batch = tiny_batch()
    with torch.no_grad():
        outputs = model(**batch)
    scale = model.logit_scale.exp().item()
    torch.testing.assert_close(outputs.logits_per_image, scale * outputs.image_embeds @ outputs.text_embeds.t())
    assert outputs.logits_per_image.shape == (4, 4)
    with torch.no_grad():
        bf16_outputs = model.to(torch.bfloat16)(**{**batch, "pixel_values": batch["pixel_values"].bfloat16()})
    assert bf16_outputs.logits_per_image.dtype == torch.bfloat16


def test_input_embeddings_are_the_text_towers():
    model = tiny_model()
    assert model.get_input_embeddings() is model.text_model.embeddings.word_embeddings
    replacement = torch.nn.Embedding(model.config.text_config.vocab_size, model.config.text_config.hidden_size)
    model.set_input_embeddings(replacement)
    assert model.text_model.get_input_embeddings() is replacement and model.get_input_embeddings() is replacement


# --------------------------------------------------------------------------------------------------------------------
# FSDP2: 2 processes (gloo) against one process holding the global batch; the gather compiled
# --------------------------------------------------------------------------------------------------------------------


def test_fsdp2_two_processes_equal_one_process_and_the_gather_compiles(tmp_path):
    """Also: a first gather of unequal batch sizes is refused, naming the sizes."""
    config_kwargs = {"sia_threshold": 0.3}
    global_batch = tiny_batch(batch_size=8, report_dim=4, seed=3)
    global_batch["report_embeds"] = global_batch["report_embeds"].sign()  # false negatives across processes
    case = {
        "batch": global_batch,
        "config_kwargs": config_kwargs,
        "strategy": "fsdp2",
        "compile_gather": has_cpp_compiler(),
        "check_uneven_batch": True,
    }
    distributed = run_two_processes(tmp_path, case)
    assert "same batch size on every process, got [2, 3]" in distributed["uneven_batch_error"]

    model = without_dropout(tiny_model(**config_kwargs).train())
    outputs = model(**global_batch, return_loss=True)
    outputs.loss.backward()
    torch.testing.assert_close(distributed["loss_sia"], outputs.loss_sia.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(distributed["loss"], outputs.loss.detach(), rtol=1e-5, atol=1e-6)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(distributed["grads"][name], parameter.grad, rtol=1e-4, atol=1e-6, msg=name)

    if not has_cpp_compiler():
        pytest.skip("no C++ compiler for torch.compile's CPU backend: the compiled gather is not checked")
    eager, compiled = distributed["gather"]["eager"], distributed["gather"]["compiled"]
    # rank 0's inputs are drawn from seed 0 and rank 1's from seed 1, as in the worker
    for rank in range(2):
        generator = torch.Generator().manual_seed(rank)
        image, text = torch.randn(3, 4, generator=generator), torch.randn(3, 4, generator=generator)
        report = torch.randn(3, 5, generator=generator)
        rows = slice(3 * rank, 3 * rank + 3)
        torch.testing.assert_close(eager["image"][rows], image)
        torch.testing.assert_close(eager["text"][rows], text)
        torch.testing.assert_close(eager["report"][rows], report)
    # both processes apply the same function to the global batch, so each local gradient is summed twice
    weights = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    torch.testing.assert_close(eager["image_grad"], 2 * weights[:3])
    torch.testing.assert_close(eager["text_grad"], 2 * 2 * eager["text"][:3])
    assert eager["row_offset"] == compiled["row_offset"] == 0
    for key in ("image", "text", "report", "image_grad", "text_grad"):
        torch.testing.assert_close(compiled[key], eager[key], rtol=0, atol=0, msg=key)


# --------------------------------------------------------------------------------------------------------------------
# Losses in float32 under bf16 autocast
# --------------------------------------------------------------------------------------------------------------------


def random_loss_inputs(seed: int = 0, batch_size: int = 6, num_tokens: int = 7, num_patches: int = 9, dim: int = 16):
    generator = torch.Generator().manual_seed(seed)
    image_embeds = F.normalize(torch.randn(batch_size, dim, generator=generator), dim=-1)
    text_embeds = F.normalize(torch.randn(batch_size, dim, generator=generator), dim=-1)
    report_embeds = F.normalize(torch.randn(batch_size, 5, generator=generator), dim=-1)
    token_embeds = F.normalize(torch.randn(batch_size, num_tokens, dim, generator=generator), dim=-1)
    patch_embeds = F.normalize(torch.randn(batch_size, num_patches, dim, generator=generator), dim=-1)
    token_mask = torch.rand(batch_size, num_tokens, generator=generator) > 0.3
    return image_embeds, text_embeds, report_embeds, token_embeds, patch_embeds, token_mask


@pytest.mark.parametrize("mode", ["eliminate", "soft"])
def test_losses_under_bf16_autocast_equal_the_float32_result(mode):
    image_embeds, text_embeds, report_embeds, token_embeds, patch_embeds, token_mask = random_loss_inputs()
    logits = 14.0 * image_embeds @ text_embeds.t()
    report_similarity = report_embeds @ report_embeds.t()

    def losses():
        sia = sia_loss(logits, logits.t(), report_similarity, threshold=0.2, mode=mode, soft_target="similarity")
        sta, weights = sta_loss(token_embeds, patch_embeds, token_mask, temperature=0.1)
        return sia, sta, weights

    expected = losses()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = losses()
        # the einsums that the losses run would be bf16 here
        assert torch.einsum("bld,bpd->blp", token_embeds, patch_embeds).dtype == torch.bfloat16
    for expected_value, got_value in zip(expected, got):
        assert got_value.dtype == torch.float32
        torch.testing.assert_close(got_value, expected_value, rtol=1e-6, atol=1e-7)


def test_the_model_scores_its_own_embeddings_in_float32_under_bf16_autocast():
    model = tiny_model()
    batch = tiny_batch(batch_size=6, report_dim=16, seed=1)
    report_embeds = F.normalize(batch["report_embeds"], dim=-1)
    # a threshold between a pair's float32 similarity and its bf16 rounding: bf16 would flip that false negative
    similarity = report_embeds @ report_embeds.t()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_similarity = (report_embeds @ report_embeds.t()).float()
    rounding = (bf16_similarity - similarity).abs().fill_diagonal_(0)
    row, column = divmod(int(rounding.argmax()), similarity.shape[1])
    assert rounding[row, column] > 1e-4, "the case needs a pair that bf16 rounds visibly"
    threshold = float(similarity[row, column] + bf16_similarity[row, column]) / 2
    model.config.sia_threshold = threshold

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(**batch, return_loss=True, output_token_patch_weights=True)
    image_embeds, text_embeds = outputs.image_embeds.float(), outputs.text_embeds.float()
    logit_scale = model.logit_scale.exp().clamp(max=100)
    expected_sia = sia_loss(
        logit_scale * image_embeds @ text_embeds.t(),
        logit_scale * text_embeds @ image_embeds.t(),
        report_embeds @ report_embeds.t(),
        threshold=threshold,
        mode=model.config.sia_mode,
    )
    token_mask = batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], torch.tensor(SPECIAL_TOKEN_IDS))
    expected_sta, expected_weights = sta_loss(
        outputs.text_token_embeds.float(),
        outputs.image_patch_embeds.float(),
        token_mask,
        temperature=model.config.sta_temperature,
        sparsity_threshold=model.config.sta_sparsity_threshold,
    )
    torch.testing.assert_close(outputs.loss_sia, expected_sia, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(outputs.loss_sta, expected_sta, rtol=1e-6, atol=1e-6)
    assert outputs.token_patch_weights.dtype == torch.float32
    torch.testing.assert_close(outputs.token_patch_weights, expected_weights * token_mask[..., None])


# --------------------------------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True)
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not has_cpp_compiler(), reason="no C++ compiler for torch.compile's CPU backend")
def test_losses_compile_without_graph_breaks_and_match_eager():
    torch._dynamo.reset()
    image_embeds, text_embeds, report_embeds, token_embeds, patch_embeds, token_mask = random_loss_inputs(seed=2)
    logits = 10.0 * image_embeds @ text_embeds.t()
    report_similarity = report_embeds @ report_embeds.t()
    positive_index = torch.arange(logits.shape[0])

    eager_mask = false_negative_mask(report_similarity, 0.1, positive_index)
    compiled_mask = torch.compile(false_negative_mask, fullgraph=True)(report_similarity, 0.1, positive_index)
    assert eager_mask.any() and torch.equal(compiled_mask, eager_mask)

    eager_sia = sia_loss(logits, logits.t(), report_similarity, threshold=0.1)
    compiled_sia = torch.compile(sia_loss, fullgraph=True)(logits, logits.t(), report_similarity, threshold=0.1)
    torch.testing.assert_close(compiled_sia, eager_sia, rtol=1e-5, atol=1e-6)

    eager_sta, eager_weights = sta_loss(token_embeds, patch_embeds, token_mask)
    compiled_sta, compiled_weights = torch.compile(sta_loss, fullgraph=True)(token_embeds, patch_embeds, token_mask)
    torch.testing.assert_close(compiled_sta, eager_sta, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled_weights, eager_weights, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# The GPU benchmark's smoke run
# --------------------------------------------------------------------------------------------------------------------


def test_gpu_scale_benchmark_runs_tiny_on_cpu(tmp_path):
    bench_gpu_scale = load_script("benchmarks/bench_gpu_scale.py")
    output = tmp_path / "bench.json"
    report = bench_gpu_scale.main(["--tiny", "--steps", "2", "--warmup", "1", "--output", str(output)])
    assert json.loads(output.read_text()) == report
    cases = report["cases"]
    assert set(cases) == {"sista", "clip", "sista_fsdp2"}
    for case in cases.values():
        assert case["images_per_s"] == pytest.approx(report["batch_size"] / case["step_time_s"])
    assert report["sista_clip_step_time_ratio"] == cases["sista"]["step_time_s"] / cases["clip"]["step_time_s"]
    # the same model from the same seed, trained with bf16 parameters under FSDP2 instead of bf16 autocast
    assert cases["sista_fsdp2"]["final_loss"] == pytest.approx(cases["sista"]["final_loss"], rel=2e-2)


def test_core_benchmark_ratio_interval_against_a_naive_bootstrap():
    bench_core = load_script("benchmarks/bench_core.py")
    rng = np.random.default_rng(1)
    clip = list(2.0 + rng.random(12))
    sista = [value * 1.05 for value in clip]
    # every resample of pairs with a constant ratio has that ratio
    low, high = bench_core.bootstrap_ratio_interval(sista, clip)
    assert low == pytest.approx(1.05) and high == pytest.approx(1.05)
    # noisy pairs: the same resamples drawn one by one, medians by sorting
    sista = list(np.array(clip) * (1.0 + 0.2 * rng.standard_normal(12)))
    indices = np.random.default_rng(0).integers(0, 12, size=(2000, 12))
    naive = []
    for row in indices:
        median = lambda values: sorted(values)[5] / 2 + sorted(values)[6] / 2  # noqa: E731
        naive.append(median([sista[i] for i in row]) / median([clip[i] for i in row]))
    low, high = bench_core.bootstrap_ratio_interval(sista, clip)
    assert (low, high) == pytest.approx(tuple(np.percentile(naive, [2.5, 97.5])))
    assert low < float(np.median(sista) / np.median(clip)) < high
