# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""STA's negatives (`sta_negatives`): the across-image token contrast against a naive loop, and its wiring."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, ResNetConfig

from configuration_sista import SistaConfig
from modeling_sista import SistaModel, sta_loss


def naive_weights(similarity_row: torch.Tensor, threshold: float, eps: float = 1e-6) -> torch.Tensor:
    """Min-max, threshold and L1-normalise one token's similarities to the patches, element by element."""
    low, high = min(similarity_row.tolist()), max(similarity_row.tolist())
    values = [(value - low) / (high - low + eps) for value in similarity_row.tolist()]
    values = [value if value >= threshold else 0.0 for value in values]
    total = max(sum(values), eps)
    return torch.tensor([value / total for value in values], dtype=similarity_row.dtype)


def naive_image_contrast(tokens, patches, token_mask, threshold, temperature):
    """Token j of report i grouped on every image m; cross-entropy over images with image i the positive."""
    per_sample = []
    for i in range(tokens.shape[0]):
        losses = []
        for j in range(tokens.shape[1]):
            if not token_mask[i, j]:
                continue
            logits = []
            for m in range(patches.shape[0]):
                weights = naive_weights(patches[m] @ tokens[i, j], threshold)
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
