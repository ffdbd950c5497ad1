# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""STA's options (`sta_negatives`, `sta_sparsity`, `sta_center_patches`, the warm start, `sta_token_unit`) against
naive per-sample loops, and their wiring in the model."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, ResNetConfig

from configuration_sista import SistaConfig
from modeling_sista import SistaModel, merge_content_words, sta_loss
from sista_examples.training.collator import SistaDataCollator, content_word_ids
from sista_examples.training.tokenizer import train_report_tokenizer


def naive_weights(similarity_row: torch.Tensor, threshold: float, eps: float = 1e-6) -> torch.Tensor:
    """Min-max, threshold and L1-normalise one token's similarities to the patches, element by element."""
    low, high = min(similarity_row.tolist()), max(similarity_row.tolist())
    values = [(value - low) / (high - low + eps) for value in similarity_row.tolist()]
    values = [value if value >= threshold else 0.0 for value in values]
    total = max(sum(values), eps)
    return torch.tensor([value / total for value in values], dtype=similarity_row.dtype)


def naive_selected_weights(similarity_row, sparsity, top_k=4, temperature=0.05, eps=1e-6):
    """Top-k of the min-max values, a softmax, or the single best patch, element by element."""
    values = similarity_row.tolist()
    if sparsity == "softmax":
        exponentials = [math.exp(value / temperature) for value in values]
        return torch.tensor([value / sum(exponentials) for value in exponentials], dtype=similarity_row.dtype)
    if sparsity == "max":
        best = values.index(max(values))
        return torch.tensor([1.0 if k == best else 0.0 for k in range(len(values))], dtype=similarity_row.dtype)
    low, high = min(values), max(values)
    normalised = [(value - low) / (high - low + eps) for value in values]
    kept = sorted(range(len(values)), key=lambda k: -normalised[k])[:top_k]
    sparse = [normalised[k] if k in kept else 0.0 for k in range(len(values))]
    return torch.tensor([value / max(sum(sparse), eps) for value in sparse], dtype=similarity_row.dtype)


def naive_image_contrast(tokens, patches, token_mask, threshold, temperature, weights_of=None):
    """Token j of report i grouped on every image m; cross-entropy over images with image i the positive."""
    weights_of = weights_of or (lambda row: naive_weights(row, threshold))
    per_sample = []
    for i in range(tokens.shape[0]):
        losses = []
        for j in range(tokens.shape[1]):
            if not token_mask[i, j]:
                continue
            logits = []
            for m in range(patches.shape[0]):
                weights = weights_of(patches[m] @ tokens[i, j])
                grouped = F.normalize((weights[:, None] * patches[m]).sum(dim=0), dim=0)
                logits.append(float(tokens[i, j] @ grouped) / temperature)
            log_normaliser = math.log(sum(math.exp(logit) for logit in logits))
            losses.append(log_normaliser - logits[i])
        if losses:
            per_sample.append(sum(losses) / len(losses))
    return sum(per_sample) / len(per_sample) if per_sample else 0.0


def naive_token_contrast(tokens, patches, token_mask, threshold, temperature):
    """SPARC's within-report contrast, symmetric, element by element."""
    per_sample = []
    for i in range(tokens.shape[0]):
        valid = [j for j in range(tokens.shape[1]) if token_mask[i, j]]
        if not valid:
            continue
        grouped = {}
        for j in valid:
            weights = naive_weights(patches[i] @ tokens[i, j], threshold)
            grouped[j] = F.normalize((weights[:, None] * patches[i]).sum(dim=0), dim=0)
        logits = {(j, k): float(tokens[i, j] @ grouped[k]) / temperature for j in valid for k in valid}
        losses = []
        for j in valid:
            token_to_group = math.log(sum(math.exp(logits[j, k]) for k in valid)) - logits[j, j]
            group_to_token = math.log(sum(math.exp(logits[k, j]) for k in valid)) - logits[j, j]
            losses.append((token_to_group + group_to_token) / 2)
        per_sample.append(sum(losses) / len(losses))
    return sum(per_sample) / len(per_sample)


@pytest.fixture
def embeddings():
    generator = torch.Generator().manual_seed(0)
    tokens = F.normalize(torch.randn(3, 5, 8, generator=generator, dtype=torch.float64), dim=-1)
    patches = F.normalize(torch.randn(3, 6, 8, generator=generator, dtype=torch.float64), dim=-1)
    token_mask = torch.tensor(
        [[True, True, True, False, False], [True, False, True, True, True], [False, False, False, False, False]]
    )
    return tokens, patches, token_mask


@pytest.mark.parametrize("threshold", [1 / 6, 0.5])
def test_image_negatives_match_naive_loop(embeddings, threshold):
    tokens, patches, token_mask = embeddings
    loss, weights = sta_loss(tokens, patches, token_mask, threshold, temperature=0.2, negatives="images")
    expected = naive_image_contrast(tokens, patches, token_mask, threshold, 0.2)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=loss.dtype), rtol=1e-9, atol=1e-9)
    # the map is the paired image's A, whatever the negatives
    for i in range(3):
        for j in range(5):
            torch.testing.assert_close(weights[i, j], naive_weights(patches[i] @ tokens[i, j], threshold))


def test_token_and_image_negatives_average_both_naive_losses(embeddings):
    tokens, patches, token_mask = embeddings
    loss, _ = sta_loss(tokens, patches, token_mask, 0.3, temperature=0.5, negatives="tokens+images")
    expected = (
        naive_token_contrast(tokens, patches, token_mask, 0.3, 0.5)
        + naive_image_contrast(tokens, patches, token_mask, 0.3, 0.5)
    ) / 2
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=loss.dtype), rtol=1e-9, atol=1e-9)


def test_token_negatives_stay_sparc_contrast(embeddings):
    tokens, patches, token_mask = embeddings
    loss, _ = sta_loss(tokens, patches, token_mask, 0.3, temperature=0.5)
    expected = naive_token_contrast(tokens, patches, token_mask, 0.3, 0.5)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=loss.dtype), rtol=1e-9, atol=1e-9)


def test_image_negatives_ignore_a_position_code_that_token_negatives_reward():
    """Patches that are the same on every image (a fixed code per position, as zero padding gives a border):
    the token contrast can be solved by them, the image contrast cannot tell the images apart."""
    generator = torch.Generator().manual_seed(1)
    position_code = F.normalize(torch.randn(1, 4, 6, generator=generator, dtype=torch.float64), dim=-1)
    patches = position_code.expand(3, 4, 6)
    tokens = position_code.expand(3, 4, 6)  # each word points at its own fixed position
    token_mask = torch.ones(3, 4, dtype=torch.bool)
    token_loss, _ = sta_loss(tokens, patches, token_mask, 0.25, temperature=0.05, negatives="tokens")
    image_loss, _ = sta_loss(tokens, patches, token_mask, 0.25, temperature=0.05, negatives="images")
    assert token_loss < 0.5 * math.log(4)
    torch.testing.assert_close(image_loss, torch.tensor(math.log(3), dtype=image_loss.dtype))


def test_image_negatives_have_gradients_through_both_towers(embeddings):
    tokens, patches, token_mask = embeddings
    tokens, patches = tokens.clone().requires_grad_(), patches.clone().requires_grad_()
    loss, _ = sta_loss(tokens, patches, token_mask, 0.3, temperature=0.5, negatives="images")
    loss.backward()
    assert torch.isfinite(tokens.grad).all() and tokens.grad.abs().sum() > 0
    assert patches.grad.abs().sum() > 0


def test_unknown_negatives_are_an_error(embeddings):
    tokens, patches, token_mask = embeddings
    with pytest.raises(ValueError, match="`negatives` must be one of"):
        sta_loss(tokens, patches, token_mask, negatives="patches")
    with pytest.raises(ValueError, match="`sta_negatives` must be one of .* got 'patches'"):
        SistaConfig(sta_negatives="patches")


def test_model_uses_config_negatives_and_round_trips(tmp_path):
    vision = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 12], depths=[1, 1], layer_type="basic")
    text = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=50)
    config = SistaConfig.from_vision_text_configs(
        vision, text, projection_dim=8, vision_pooling="mean", sia_mode="off", sta_negatives="images",
        sta_ignore_token_ids=[0, 1],
    )
    torch.manual_seed(0)
    model = SistaModel(config).eval()
    inputs = {
        "input_ids": torch.tensor([[1, 5, 6, 7, 2], [1, 8, 9, 2, 0], [1, 10, 11, 12, 2]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
        "pixel_values": torch.randn(3, 3, 32, 32),
    }
    with torch.no_grad():
        outputs = model(**inputs, return_loss=True)
    token_mask = model.sta_token_mask(inputs["input_ids"], inputs["attention_mask"])
    expected, _ = sta_loss(outputs.text_token_embeds, outputs.image_patch_embeds, token_mask, negatives="images")
    torch.testing.assert_close(outputs.loss_sta, expected)
    design, _ = sta_loss(outputs.text_token_embeds, outputs.image_patch_embeds, token_mask, negatives="tokens")
    assert not torch.allclose(outputs.loss_sta, design)

    model.save_pretrained(tmp_path)
    reloaded = SistaModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.sta_negatives == "images"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs, return_loss=True).loss_sta, outputs.loss_sta)
    assert SistaConfig().sta_negatives == "tokens"


# ---------------------------------------------------------------------------------------------------------------------
# sta_sparsity: top-k, softmax, FILIP's max
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", ["top_k", "softmax", "max"])
def test_selecting_sparsities_match_naive_loop(embeddings, sparsity):
    tokens, patches, token_mask = embeddings
    options = {"sparsity": sparsity, "top_k": 2, "sparsity_temperature": 0.07}
    loss, weights = sta_loss(tokens, patches, token_mask, temperature=0.2, negatives="images", **options)

    def weights_of(row):
        return naive_selected_weights(row, sparsity, top_k=2, temperature=0.07)

    expected = naive_image_contrast(tokens, patches, token_mask, None, 0.2, weights_of)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=loss.dtype), rtol=1e-9, atol=1e-9)
    for i in range(3):
        for j in range(5):
            torch.testing.assert_close(weights[i, j], weights_of(patches[i] @ tokens[i, j]))


def test_filip_max_scores_a_token_by_its_most_similar_patch(embeddings):
    """With `sparsity="max"` a token's logit on image m is max_k <w, p_mk> / temperature (FILIP), by hand."""
    tokens, patches, token_mask = embeddings
    loss, _ = sta_loss(tokens, patches, token_mask, temperature=0.2, negatives="images", sparsity="max")
    per_sample = []
    for i in (0, 1):
        losses = []
        for j in torch.nonzero(token_mask[i]).flatten().tolist():
            logits = torch.stack([(patches[m] @ tokens[i, j]).max() / 0.2 for m in range(3)])
            losses.append(torch.logsumexp(logits, 0) - logits[i])
        per_sample.append(sum(losses) / len(losses))
    torch.testing.assert_close(loss, sum(per_sample) / 2)


def test_top_k_keeps_k_patches_where_the_threshold_keeps_almost_all(embeddings):
    tokens, patches, token_mask = embeddings
    _, threshold_weights = sta_loss(tokens, patches, token_mask)
    _, top_weights = sta_loss(tokens, patches, token_mask, sparsity="top_k", top_k=2)
    assert ((top_weights > 0).sum(-1) <= 2).all()
    assert (threshold_weights > 0).sum(-1).float().mean() > 2


def test_image_contrast_against_a_larger_global_batch_matches_naive_loop(embeddings):
    """Reports of one process scored against the images of all processes (row offset 1): the naive loop over the
    global batch, keeping the local rows."""
    tokens, patches, token_mask = embeddings
    loss, _ = sta_loss(
        tokens[1:2], patches[1:2], token_mask[1:2], 0.3, temperature=0.5, negatives="images",
        all_image_patch_embeds=patches, row_offset=1,
    )
    local_rows = torch.tensor([False, True, False])
    expected = naive_image_contrast(tokens, patches, token_mask & local_rows[:, None], 0.3, 0.5)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=loss.dtype), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------------
# model options: centring, warm start, content words
# ---------------------------------------------------------------------------------------------------------------------


def tiny_model(**fields) -> SistaModel:
    vision = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 12], depths=[1, 1], layer_type="basic")
    text = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=60)
    config = SistaConfig.from_vision_text_configs(
        vision, text, projection_dim=8, vision_pooling="mean", sia_mode="off", sta_ignore_token_ids=[0, 1, 2],
        **fields,
    )
    torch.manual_seed(0)
    return SistaModel(config)


TINY_INPUTS = {
    "input_ids": torch.tensor([[1, 5, 6, 7, 2], [1, 8, 9, 2, 0], [1, 10, 11, 12, 2]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
}


def test_centred_patches_remove_the_batch_cell_mean_and_keep_its_average_for_evaluation(tmp_path):
    model = tiny_model(sta_center_patches=True, sta_negatives="images").train()
    generator = torch.Generator().manual_seed(2)
    batches = [torch.randn(3, 3, 32, 32, generator=generator) for _ in range(2)]
    for pixel_values in batches:
        outputs = model(**TINY_INPUTS, pixel_values=pixel_values, return_loss=True)
        patches = outputs.image_patch_embeds.detach()
        num_images, num_cells, _ = patches.shape
        centred = torch.empty_like(patches)
        for cell in range(num_cells):
            cell_mean = sum(patches[m, cell] for m in range(num_images)) / num_images
            for m in range(num_images):
                centred[m, cell] = F.normalize(patches[m, cell] - cell_mean, dim=0)
        token_mask = model.sta_token_mask(TINY_INPUTS["input_ids"], TINY_INPUTS["attention_mask"])
        expected, _ = sta_loss(outputs.text_token_embeds, centred, token_mask, negatives="images")
        torch.testing.assert_close(outputs.loss_sta, expected)
    model.eval()
    assert model.config.sta_patch_mean_cells == model.sta_patch_mean.shape[0] == num_cells
    model.save_pretrained(tmp_path)
    reloaded = SistaModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded.sta_patch_mean, model.sta_patch_mean)
    # evaluation centres by the saved average, not by the batch
    pixel_values = batches[0][:1]
    inputs = {key: value[:1] for key, value in TINY_INPUTS.items()}
    with torch.no_grad():
        outputs = reloaded(**inputs, pixel_values=pixel_values, output_token_patch_weights=True)
    centred = F.normalize(outputs.image_patch_embeds - reloaded.sta_patch_mean, dim=-1)
    similarity = torch.einsum("bld,bpd->blp", outputs.text_token_embeds, centred)
    token = 1  # a word token of the first report
    expected = naive_weights(similarity[0, token], 1 / similarity.shape[-1])
    torch.testing.assert_close(outputs.token_patch_weights[0, token], expected, rtol=1e-4, atol=1e-6)


def test_centring_average_follows_the_batches():
    model = tiny_model(sta_center_patches=True).train()
    generator = torch.Generator().manual_seed(3)
    means = []
    for _ in range(2):
        pixel_values = torch.randn(3, 3, 32, 32, generator=generator)
        outputs = model(**TINY_INPUTS, pixel_values=pixel_values, return_loss=True)
        means.append(outputs.image_patch_embeds.detach().mean(0))
    torch.testing.assert_close(model.sta_patch_mean, 0.9 * means[0] + 0.1 * means[1])


def test_warm_start_weight_by_hand_and_in_the_loss():
    model = tiny_model(sta_start_step=4, sta_warmup_steps=3, sta_weight=0.6).train()
    expected = {0: 0.0, 3: 0.0, 4: 0.2, 5: 0.4, 6: 0.6, 50: 0.6}
    for step, weight in expected.items():
        assert model.sta_weight_at(step) == pytest.approx(weight)
    pixel_values = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    early = model(**TINY_INPUTS, pixel_values=pixel_values, return_loss=True, training_step=2)
    assert early.loss_sta is None
    torch.testing.assert_close(early.loss, early.loss_sia)
    ramp = model(**TINY_INPUTS, pixel_values=pixel_values, return_loss=True, training_step=5)
    torch.testing.assert_close(ramp.loss, ramp.loss_sia + 0.4 * ramp.loss_sta)
    with pytest.raises(ValueError, match="pass `training_step`"):
        model(**TINY_INPUTS, pixel_values=pixel_values, return_loss=True)
    # evaluation mode: the full weight, no step needed
    model.eval()
    with torch.no_grad():
        evaluated = model(**TINY_INPUTS, pixel_values=pixel_values, return_loss=True)
    torch.testing.assert_close(evaluated.loss, evaluated.loss_sia + 0.6 * evaluated.loss_sta)


def test_content_word_ids_merge_subwords_and_drop_stop_words(tmp_path):
    # frequent words become whole tokens; "zygomorphic" is never seen, so it falls back to characters
    tokenizer = train_report_tokenizer(["the heart is normal", "no effusion"] * 3, vocab_size=300)
    text = "The heart is zygomorphic, no effusion."
    encoding = tokenizer([text]).encodings[0]
    ids = content_word_ids(encoding, text)
    words = {}
    for token, word in zip(encoding.tokens, ids):
        words.setdefault(word, []).append(token)
    assert words[0] == ["heart"] and words[2] == ["effusion"]
    assert len(words[1]) > 1 and "".join(token.removeprefix("##") for token in words[1]) == "zygomorphic"
    assert words[-1] == ["[CLS]", "the", "is", ",", "no", ".", "[SEP]"]
    assert set(words) == {-1, 0, 1, 2}
    batch = SistaDataCollator(tokenizer, content_word_ids=True)(
        [{"report": text, "pixel_values": torch.zeros(3, 8, 8, dtype=torch.uint8)}]
    )
    assert batch["word_ids"][0].tolist() == ids


def test_merge_content_words_matches_naive_average():
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(2, 6, 4, generator=generator, dtype=torch.float64)
    word_ids = torch.tensor([[-1, 0, 0, 1, -1, -1], [-1, 0, 1, 1, 1, 2]])
    merged, mask = merge_content_words(features, word_ids)
    for b in range(2):
        for word in range(6):
            members = [t for t in range(6) if word_ids[b, t] == word]
            assert bool(mask[b, word]) == bool(members)
            if members:
                torch.testing.assert_close(merged[b, word], sum(features[b, t] for t in members) / len(members))


def test_word_unit_loss_is_sta_over_merged_words_and_maps_back_to_tokens():
    model = tiny_model(sta_token_unit="words", sta_negatives="images").eval()
    pixel_values = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    word_ids = torch.tensor([[-1, 0, 0, 1, -1], [-1, 0, -1, -1, -1], [-1, 0, 1, 1, -1]])
    with torch.no_grad():
        outputs = model(
            **TINY_INPUTS, pixel_values=pixel_values, word_ids=word_ids, return_loss=True,
            output_token_patch_weights=True,
        )
        _, _, token_features = model.encode_text(TINY_INPUTS["input_ids"], TINY_INPUTS["attention_mask"])
    words = torch.zeros(3, 2, token_features.shape[-1])
    word_mask = torch.zeros(3, 2, dtype=torch.bool)
    for b in range(3):
        for word in range(2):
            members = [t for t in range(5) if word_ids[b, t] == word]
            if members:
                words[b, word] = F.normalize(sum(token_features[b, t] for t in members) / len(members), dim=0)
                word_mask[b, word] = True
    expected, word_weights = sta_loss(words, outputs.image_patch_embeds, word_mask, negatives="images")
    torch.testing.assert_close(outputs.loss_sta, expected)
    torch.testing.assert_close(outputs.token_patch_weights[2, 3], word_weights[2, 1])
    torch.testing.assert_close(outputs.token_patch_weights[0, 4], torch.zeros_like(word_weights[0, 0]))
    with pytest.raises(ValueError, match="needs `word_ids`"):
        model(**TINY_INPUTS, pixel_values=pixel_values, return_loss=True)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"sta_sparsity": "median"}, "`sta_sparsity` must be one of"),
        ({"sta_top_k": 0}, "`sta_top_k` must be a positive integer"),
        ({"sta_sparsity_temperature": 0.0}, "`sta_sparsity_temperature` must be > 0"),
        ({"sta_center_patches": "yes"}, "`sta_center_patches` must be True or False"),
        ({"sta_start_step": -1}, "`sta_start_step` must be an integer >= 0"),
        ({"sta_warmup_steps": 2.5}, "`sta_warmup_steps` must be an integer >= 0"),
        ({"sta_token_unit": "sentences"}, "`sta_token_unit` must be one of"),
    ],
)
def test_bad_sta_options_name_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        SistaConfig(**fields)


def test_two_process_image_contrast_and_centring_equal_one_process(tmp_path):
    """The image contrast compares each report with the images of every process, and the centring removes the
    global batch's cell mean: 2 processes holding half the batch each give the loss and gradients of one."""
    from conftest import run_two_processes, tiny_batch, tiny_sista_config, without_dropout

    config_kwargs = {"sta_negatives": "images", "sta_center_patches": True, "sia_mode": "off"}
    global_batch = tiny_batch(batch_size=6, report_dim=4, seed=5)
    distributed = run_two_processes(tmp_path, {"batch": global_batch, "config_kwargs": config_kwargs}, timeout=240)
    torch.manual_seed(0)
    model = without_dropout(SistaModel(tiny_sista_config(**config_kwargs)).train())
    outputs = model(**global_batch, return_loss=True)
    outputs.loss.backward()
    torch.testing.assert_close(distributed["loss"], outputs.loss.detach(), rtol=1e-5, atol=1e-6)
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            torch.testing.assert_close(distributed["grads"][name], parameter.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_pretrain_flags_reach_the_config():
    from transformers import HfArgumentParser

    from sista_examples.training.pretraining import PretrainingModelArguments
    from sista_examples.training.run_config import resolve_run_config

    (model_args,) = HfArgumentParser(PretrainingModelArguments).parse_args_into_dataclasses(
        args=["--sta_sparsity", "top_k", "--sta_top_k", "3", "--sta_center_patches", "true", "--sta_start_step", "5",
              "--sta_warmup_steps", "2", "--sta_token_unit", "words", "--sta_negatives", "images"]
    )
    run_config, _ = resolve_run_config(model_args)
    fields = run_config.sista_config_fields()
    expected = {"sta_sparsity": "top_k", "sta_top_k": 3, "sta_center_patches": True, "sta_start_step": 5,
                "sta_warmup_steps": 2, "sta_token_unit": "words", "sta_negatives": "images"}
    assert {name: fields[name] for name in expected} == expected
    assert {name: run_config.sources[name] for name in expected} == dict.fromkeys(expected, "given")
    config = SistaConfig(**fields)
    assert config.sta_top_k == 3 and config.sta_token_unit == "words"
    (defaults,) = HfArgumentParser(PretrainingModelArguments).parse_args_into_dataclasses(args=[])
    default_config, _ = resolve_run_config(defaults)
    assert {name: default_config.sources[name] for name in expected} == dict.fromkeys(expected, "default")
    assert {name: default_config.sista_config_fields()[name] for name in expected} == {
        name: getattr(SistaConfig(), name) for name in expected
    }


def test_pretrain_runs_a_warm_start_on_content_words(tmp_path):
    """examples/pretrain.py end to end: the trainer passes the step (STA is 0 before `sta_start_step`, then on) and
    the collator the content words the config asks for."""
    import json

    from conftest import load_script
    from sista_examples.data.synthcxr import generate_synthcxr

    dataset = generate_synthcxr(num_pretrain=16, num_train=0, num_validation=0, num_test=0, image_size=32, seed=0)
    dataset.save_to_disk(str(tmp_path / "data"))
    load_script("examples/pretrain.py").main(
        ["--model_preset", "tiny", "--objective", "sista", "--sia_mode", "eliminate", "--report_encoder", "tfidf",
         "--dataset_path", str(tmp_path / "data"), "--output_dir", str(tmp_path / "run"), "--max_steps", "3",
         "--per_device_train_batch_size", "4", "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none",
         "--dataloader_num_workers", "0", "--disable_tqdm", "True", "--sta_start_step", "2",
         "--sta_token_unit", "words", "--sta_negatives", "images"]
    )
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    sta = [entry["loss_sta"] for entry in history if "loss" in entry]
    assert sta[:2] == [0.0, 0.0] and sta[2] > 0
    config = SistaConfig.from_pretrained(tmp_path / "run")
    assert config.sta_start_step == 2 and config.sta_token_unit == "words"
