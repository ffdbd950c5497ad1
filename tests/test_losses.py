"""SIA and STA against independent oracles: transformers' CLIP loss, naive per-row / per-sample loops, gradcheck."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers.models.clip.modeling_clip import image_text_contrastive_loss as clip_loss

from modeling_sista import false_negative_mask, sia_loss, sparse_token_patch_weights, sta_loss


def random_embeddings(*shape, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator, dtype=dtype), dim=-1)


def clustered_report_similarity(batch_size, seed=0):
    """Reports drawn from 3 topics, so that some pairs are near-identical (false negatives) and others are not."""
    generator = torch.Generator().manual_seed(seed)
    topics = F.normalize(torch.randn(3, 16, generator=generator), dim=-1)
    topic_of = torch.randint(0, 3, (batch_size,), generator=generator)
    report_embeds = F.normalize(topics[topic_of] + 0.05 * torch.randn(batch_size, 16, generator=generator), dim=-1)
    return report_embeds @ report_embeds.t()


# --------------------------------------------------------------------------------------------------------------------
# SIA
# --------------------------------------------------------------------------------------------------------------------


def naive_sia_direction(logits, report_similarity, threshold, mode, soft_target):
    losses = []
    for i in range(logits.shape[0]):
        if mode == "eliminate":
            kept = [j for j in range(logits.shape[1]) if j == i or report_similarity[i, j] < threshold]
            losses.append(-(logits[i, i] - torch.logsumexp(logits[i, kept], dim=0)))
        else:
            weights = torch.zeros(logits.shape[1], dtype=logits.dtype)
            for j in range(logits.shape[1]):
                if j == i:
                    weights[j] = 1.0
                elif report_similarity[i, j] >= threshold:
                    weights[j] = 1.0 if soft_target == "uniform" else max(report_similarity[i, j].item(), 0.0)
            weights = weights / weights.sum()
            log_probs = logits[i] - torch.logsumexp(logits[i], dim=0)
            losses.append(-(weights * log_probs).sum())
    return torch.stack(losses).mean()


def naive_sia(logits_per_image, report_similarity, threshold, mode="eliminate", soft_target="uniform"):
    image_to_text = naive_sia_direction(logits_per_image, report_similarity, threshold, mode, soft_target)
    text_to_image = naive_sia_direction(logits_per_image.t(), report_similarity, threshold, mode, soft_target)
    return (image_to_text + text_to_image) / 2


@pytest.mark.parametrize("mode", ["eliminate", "soft"])
def test_sia_with_threshold_above_one_equals_transformers_clip_loss(mode):
    image_embeds, text_embeds = random_embeddings(8, 16, seed=1), random_embeddings(8, 16, seed=2)
    logits_per_text = 14.3 * text_embeds @ image_embeds.t()
    report_similarity = torch.ones(8, 8)  # every pair identical, yet a threshold above 1 flags nothing
    loss = sia_loss(logits_per_text.t(), logits_per_text, report_similarity, threshold=1.01, mode=mode)
    torch.testing.assert_close(loss, clip_loss(logits_per_text), rtol=0, atol=1e-6)


def test_sia_mode_off_equals_transformers_clip_loss():
    image_embeds, text_embeds = random_embeddings(8, 16, seed=1), random_embeddings(8, 16, seed=2)
    logits_per_text = 14.3 * text_embeds @ image_embeds.t()
    report_similarity = torch.ones(8, 8)  # every pair identical, and a threshold that would flag them all
    loss = sia_loss(logits_per_text.t(), logits_per_text, report_similarity, threshold=0.0, mode="off")
    torch.testing.assert_close(loss, clip_loss(logits_per_text), rtol=0, atol=1e-6)


def test_model_with_false_negative_removal_off_gives_transformers_clip_loss():
    """sia_mode="off" flags no pair, whatever the threshold and the report embeddings."""
    from conftest import tiny_batch, tiny_sista_config
    from modeling_sista import SistaModel

    config = tiny_sista_config(sta_weight=0.0, sia_mode="off", sia_threshold=0.0)
    assert config.sia_mode == "off"
    torch.manual_seed(0)
    model = SistaModel(config).eval()
    batch = tiny_batch(batch_size=6)
    batch["report_embeds"] = torch.ones_like(batch["report_embeds"])  # all identical: SIA would flag every pair
    with torch.no_grad():
        outputs = model(**batch, return_loss=True)
        without_report_embeds = model(**{**batch, "report_embeds": None}, return_loss=True)
    torch.testing.assert_close(outputs.loss_sia, clip_loss(outputs.logits_per_text), rtol=0, atol=1e-6)
    torch.testing.assert_close(without_report_embeds.loss_sia, outputs.loss_sia)
    reloaded = type(config).from_dict(config.to_dict())
    assert reloaded.sia_mode == "off"


@pytest.mark.parametrize(
    "mode,soft_target", [("eliminate", "uniform"), ("soft", "uniform"), ("soft", "similarity")]
)
@pytest.mark.parametrize("threshold", [0.5, 0.9])
def test_sia_equals_naive_per_row_loop(mode, soft_target, threshold):
    image_embeds, text_embeds = random_embeddings(12, 16, seed=3), random_embeddings(12, 16, seed=4)
    logits_per_image = 10.0 * image_embeds @ text_embeds.t()
    report_similarity = clustered_report_similarity(12, seed=5)
    flagged = false_negative_mask(report_similarity, threshold, torch.arange(12)).sum().item()
    assert 0 < flagged < 12 * 11, "the case must flag some pairs but not all"
    loss = sia_loss(logits_per_image, logits_per_image.t(), report_similarity, threshold, mode, soft_target)
    expected = naive_sia(logits_per_image, report_similarity, threshold, mode, soft_target)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


def test_sia_eliminate_lowers_the_loss_of_false_negatives_only():
    logits_per_image = 10.0 * random_embeddings(6, 16, seed=6) @ random_embeddings(6, 16, seed=7).t()
    no_pairs = sia_loss(logits_per_image, logits_per_image.t(), torch.eye(6), threshold=0.9)
    similarity = torch.eye(6)
    similarity[0, 1] = similarity[1, 0] = 0.95
    with_pair = sia_loss(logits_per_image, logits_per_image.t(), similarity, threshold=0.9)
    assert with_pair < no_pairs


def test_sia_all_reports_identical_gives_zero_in_eliminate_mode():
    logits_per_image = 10.0 * random_embeddings(5, 16, seed=8) @ random_embeddings(5, 16, seed=9).t()
    loss = sia_loss(logits_per_image, logits_per_image.t(), torch.ones(5, 5), threshold=0.9)
    assert loss.item() == 0.0


def test_sia_local_rows_against_global_columns_match_the_full_batch():
    """The per-process slice of the distributed scheme, averaged over processes, is the full-batch loss."""
    image_embeds, text_embeds = random_embeddings(8, 16, seed=10), random_embeddings(8, 16, seed=11)
    report_similarity = clustered_report_similarity(8, seed=12)
    logits_per_image = 10.0 * image_embeds @ text_embeds.t()
    full = sia_loss(logits_per_image, logits_per_image.t(), report_similarity, 0.9, "soft", "similarity")
    per_process = [
        sia_loss(
            logits_per_image[rows],
            logits_per_image.t()[rows],
            report_similarity[rows],
            0.9,
            "soft",
            "similarity",
            row_offset=rows.start,
        )
        for rows in (slice(0, 4), slice(4, 8))
    ]
    torch.testing.assert_close(torch.stack(per_process).mean(), full)


@pytest.mark.parametrize("mode,soft_target", [("eliminate", "uniform"), ("soft", "similarity")])
def test_sia_gradcheck(mode, soft_target):
    report_similarity = clustered_report_similarity(5, seed=13).double()
    image_embeds = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    text_embeds = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)

    def loss_fn(image_embeds, text_embeds):
        logits = image_embeds @ text_embeds.t()
        return sia_loss(logits, logits.t(), report_similarity, 0.9, mode, soft_target)

    assert torch.autograd.gradcheck(loss_fn, (image_embeds, text_embeds))


# --------------------------------------------------------------------------------------------------------------------
# STA
# --------------------------------------------------------------------------------------------------------------------


def naive_sta(text_token_embeds, image_patch_embeds, token_mask, sparsity_threshold, temperature, eps=1e-6):
    per_sample = []
    for b in range(text_token_embeds.shape[0]):
        valid = [j for j in range(text_token_embeds.shape[1]) if token_mask[b, j]]
        if not valid:
            continue
        tokens, patches = text_token_embeds[b, valid], image_patch_embeds[b]
        grouped = []
        for token in tokens:
            similarity = patches @ token
            normalized = (similarity - similarity.min()) / (similarity.max() - similarity.min() + eps)
            kept = torch.where(normalized >= sparsity_threshold, normalized, torch.zeros_like(normalized))
            weights = kept / kept.sum()
            grouped.append(F.normalize(weights @ patches, dim=0))
        grouped = torch.stack(grouped)
        logits = tokens @ grouped.t() / temperature
        targets = torch.arange(len(valid))
        per_sample.append((F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2)
    return torch.stack(per_sample).mean()


def sta_case(dtype=torch.float32, batch_size=3, num_tokens=7, num_patches=9, dim=8):
    text_token_embeds = random_embeddings(batch_size, num_tokens, dim, dtype=dtype, seed=20)
    image_patch_embeds = random_embeddings(batch_size, num_patches, dim, dtype=dtype, seed=21)
    token_mask = torch.ones(batch_size, num_tokens, dtype=torch.bool)
    token_mask[:, 0] = False  # [CLS]
    token_mask[0, 5:] = False  # [SEP] + padding
    token_mask[-1, 3] = False  # a special token in the middle
    return text_token_embeds, image_patch_embeds, token_mask


@pytest.mark.parametrize("sparsity_threshold", [None, 0.5, 0.0])
def test_sta_equals_naive_per_sample_loop(sparsity_threshold):
    text_token_embeds, image_patch_embeds, token_mask = sta_case()
    loss, weights = sta_loss(text_token_embeds, image_patch_embeds, token_mask, sparsity_threshold, temperature=0.1)
    threshold = 1 / 9 if sparsity_threshold is None else sparsity_threshold
    expected = naive_sta(text_token_embeds, image_patch_embeds, token_mask, threshold, temperature=0.1)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 7))
    if sparsity_threshold == 0.5:
        assert (weights == 0).any(), "a threshold of 0.5 must zero some patches"


def test_sta_weights_are_sparse_and_keep_the_best_patch():
    similarity = torch.tensor([[[0.1, 0.9, 0.6, 0.2]]])
    weights = sparse_token_patch_weights(similarity, sparsity_threshold=0.5)
    # min-max: [0, 1, 0.625, 0.125] -> keep [0, 1, 0.625, 0] -> L1: [0, 1/1.625, 0.625/1.625, 0]
    expected = torch.tensor([[[0.0, 1 / 1.625, 0.625 / 1.625, 0.0]]])
    torch.testing.assert_close(weights, expected, atol=1e-5, rtol=0)


def test_sta_without_valid_tokens_is_zero_and_finite():
    text_token_embeds, image_patch_embeds, token_mask = sta_case()
    loss, weights = sta_loss(text_token_embeds, image_patch_embeds, torch.zeros_like(token_mask))
    assert loss.item() == 0.0 and torch.isfinite(weights).all()
    # one sample without tokens is left out of the mean, not counted as 0
    token_mask[1] = False
    loss, _ = sta_loss(text_token_embeds, image_patch_embeds, token_mask, temperature=0.1)
    kept = [0, 2]
    expected = naive_sta(text_token_embeds[kept], image_patch_embeds[kept], token_mask[kept], 1 / 9, 0.1)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_sta_gradcheck():
    text_token_embeds, image_patch_embeds, token_mask = sta_case(dtype=torch.float64, batch_size=2, num_tokens=4)
    text_token_embeds.requires_grad_(True)
    image_patch_embeds.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda tokens, patches: sta_loss(tokens, patches, token_mask, 0.3, 0.5)[0],
        (text_token_embeds, image_patch_embeds),
    )


def test_losses_are_finite_under_bf16():
    text_token_embeds, image_patch_embeds, token_mask = sta_case(dtype=torch.bfloat16)
    loss, weights = sta_loss(text_token_embeds, image_patch_embeds, token_mask)
    assert torch.isfinite(loss) and torch.isfinite(weights).all()
    logits = (100 * random_embeddings(6, 8, seed=30) @ random_embeddings(6, 8, seed=31).t()).bfloat16()
    for mode in ("eliminate", "soft"):
        loss = sia_loss(logits, logits.t(), torch.ones(6, 6), 0.9, mode)
        assert math.isfinite(loss.item())
