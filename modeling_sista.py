# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""PyTorch SISTA model: image-report pre-training with semantic-aware instance alignment (SIA) and sparse token
alignment (STA).

Read top to bottom: the loss functions (small, pure, module-level), the distributed gather, the output dataclass,
then the models; then the task heads (classification, segmentation, detection) with their own losses and box
utilities.
"""

import glob
import inspect
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import MODEL_MAPPING, AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import ConversionOps, WeightConverter
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput, SemanticSegmenterOutput
from transformers.utils import CONFIG_NAME, ModelOutput, logging


if torch.distributed.is_available():
    from torch.distributed import _functional_collectives as functional_collectives

try:
    from .configuration_sista import PROBLEM_TYPES, STA_NEGATIVES, STA_SPARSITIES, STAGED_VISION_BACKBONES, SistaConfig
    from .processing_sista import batched_nms, box_iou, center_to_corners, decode_detections, post_process_detections
except ImportError:  # a flat checkout imported without a package
    from configuration_sista import PROBLEM_TYPES, STA_NEGATIVES, STA_SPARSITIES, STAGED_VISION_BACKBONES, SistaConfig
    from processing_sista import batched_nms, box_iou, center_to_corners, decode_detections, post_process_detections


logger = logging.get_logger(__name__)

# the probability at which the heads' binary outputs (segmentation mask, detection heatmap) start (RetinaNet's prior),
# and the bias of their last layer that gives it
FOCAL_PRIOR = 0.01
FOCAL_PRIOR_BIAS = -math.log((1 - FOCAL_PRIOR) / FOCAL_PRIOR)


# ---------------------------------------------------------------------------------------------------------------------
# SIA: semantic-aware instance alignment
# ---------------------------------------------------------------------------------------------------------------------


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision inputs are scored in float32 (softmax and min-max under bf16 autocast); float64 stays."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def false_negative_mask(
    report_similarity: torch.Tensor, threshold: float, positive_index: torch.Tensor
) -> torch.BoolTensor:
    r"""
    Flags the false negatives of each row: `F(i) = {j != pos(i) : r_ij >= threshold}`.

    Args:
        report_similarity (`torch.Tensor` of shape `(num_rows, num_columns)`): cosine similarity `r_ij` of the reports.
        threshold (`float`): pairs at or above it are false negatives; above 1 nothing is flagged.
        positive_index (`torch.LongTensor` of shape `(num_rows,)`): the column of each row's true pair.
    """
    flagged = report_similarity >= threshold
    is_positive = F.one_hot(positive_index, report_similarity.shape[1]).bool()
    return flagged & ~is_positive


def semantic_aware_contrastive_loss(
    logits: torch.Tensor,
    false_negatives: torch.BoolTensor,
    positive_index: torch.Tensor,
    mode: str = "eliminate",
    soft_target: str = "uniform",
    report_similarity: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""
    One direction of SIA, averaged over rows.

    `mode="eliminate"`: `-log( exp(s_ii) / (exp(s_ii) + sum_{j not in F(i), j != i} exp(s_ij)) )`, i.e. the false
    negatives are removed from the softmax denominator. A row whose every other column is a false negative has loss 0.

    `mode="soft"`: soft cross-entropy `-sum_j q_ij log softmax(s_i)_j` over the full row, with `q_i` spread over
    `{i} ∪ F(i)`, uniformly (`soft_target="uniform"`) or proportionally to `max(r_ij, 0)` (`"similarity"`).

    `mode="off"`: no pair is a false negative, the cross-entropy of CLIP; so are both other modes without false
    negatives.
    """
    logits = upcast(logits)
    if mode == "off":
        return F.cross_entropy(logits, positive_index)
    if mode == "eliminate":
        masked_logits = logits.masked_fill(false_negatives, torch.finfo(logits.dtype).min)
        return F.cross_entropy(masked_logits, positive_index)
    if mode == "soft":
        positives = false_negatives | F.one_hot(positive_index, logits.shape[1]).bool()
        if soft_target == "similarity":
            target_weights = report_similarity.to(logits.dtype).clamp_min(0) * positives
            # the true pair always keeps a positive weight, so every row sums to more than 0
            target_weights = target_weights.scatter(1, positive_index[:, None], 1.0)
        else:
            target_weights = positives.to(logits.dtype)
        targets = target_weights / target_weights.sum(dim=1, keepdim=True)
        return -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()
    raise ValueError(f"`mode` must be 'eliminate', 'soft' or 'off', got {mode!r}.")


def sia_loss(
    logits_per_image: torch.Tensor,
    logits_per_text: torch.Tensor,
    report_similarity: torch.Tensor,
    threshold: float,
    mode: str = "eliminate",
    soft_target: str = "uniform",
    row_offset: int = 0,
) -> torch.Tensor:
    r"""
    `L_SIA = (L_i2t + L_t2i) / 2`.

    Args:
        logits_per_image (`torch.Tensor` of shape `(local_batch_size, global_batch_size)`):
            `exp(t) <x_i, y_j>` for this process's images against all reports.
        logits_per_text (`torch.Tensor` of shape `(local_batch_size, global_batch_size)`):
            `exp(t) <y_i, x_j>` for this process's reports against all images.
        report_similarity (`torch.Tensor` of shape `(local_batch_size, global_batch_size)`):
            `<e_i, e_j>`, symmetric, so it serves both directions.
        row_offset (`int`): index of this process's first sample in the global batch (0 on a single process).

    Computed in float32 (float64 inputs stay float64), also under autocast.
    """
    with torch.autocast(device_type=logits_per_image.device.type, enabled=False):
        logits_per_image, logits_per_text = upcast(logits_per_image), upcast(logits_per_text)
        report_similarity = upcast(report_similarity)
        positive_index = torch.arange(logits_per_image.shape[0], device=logits_per_image.device) + row_offset
        false_negatives = false_negative_mask(report_similarity, threshold, positive_index)
        image_to_text = semantic_aware_contrastive_loss(
            logits_per_image, false_negatives, positive_index, mode, soft_target, report_similarity
        )
        text_to_image = semantic_aware_contrastive_loss(
            logits_per_text, false_negatives, positive_index, mode, soft_target, report_similarity
        )
        return (image_to_text + text_to_image) / 2


# ---------------------------------------------------------------------------------------------------------------------
# STA: sparse token alignment
# ---------------------------------------------------------------------------------------------------------------------


def sparse_token_patch_weights(
    token_patch_similarity: torch.Tensor,
    sparsity_threshold: float,
    eps: float = 1e-6,
    sparsity: str = "threshold",
    top_k: int = 4,
    sparsity_temperature: float = 0.05,
) -> torch.Tensor:
    r"""
    Sparse word-to-patch alignment weights `A` (the grounding map), per token row. With `sparsity="threshold"`
    (SPARC, the design):

    1. min-max normalise over patches: `S^ = (S - min_k S) / (max_k S - min_k S + eps)`;
    2. sparsify: `S~ = S^ if S^ >= sparsity_threshold else 0`;
    3. L1-normalise: `A = S~ / sum_k S~`.

    `"top_k"` replaces step 2 by keeping the `top_k` largest `S^` of the row; `"softmax"` is
    `A = softmax_k(S / sparsity_temperature)`; `"max"` puts all weight on the most similar patch (FILIP's
    token-wise maximum; no gradient flows through the choice).

    Args:
        token_patch_similarity (`torch.Tensor` of shape `(..., num_tokens, num_patches)`): `<w_ij, p_ik>`.
        sparsity_threshold (`float`): in [0, 1]; the patch of maximal similarity is always kept.

    Returns:
        `torch.Tensor` of the input's shape; rows sum to 1 (with `"threshold"` or `"top_k"`, 0 for a row whose
        similarities are all equal, which has no patch to prefer).
    """
    if sparsity not in STA_SPARSITIES:
        raise ValueError(f"`sparsity` must be one of {STA_SPARSITIES}, got {sparsity!r}.")
    if sparsity == "softmax":
        return (token_patch_similarity / sparsity_temperature).softmax(dim=-1)
    if sparsity == "max":
        best = token_patch_similarity.argmax(dim=-1)
        return F.one_hot(best, token_patch_similarity.shape[-1]).to(token_patch_similarity.dtype)
    row_min = token_patch_similarity.amin(dim=-1, keepdim=True)
    row_max = token_patch_similarity.amax(dim=-1, keepdim=True)
    normalized = (token_patch_similarity - row_min) / (row_max - row_min + eps)
    if sparsity == "top_k":
        kept_indices = normalized.topk(min(top_k, normalized.shape[-1]), dim=-1).indices
        kept = torch.zeros_like(normalized, dtype=torch.bool).scatter(-1, kept_indices, True)
    else:
        kept = normalized >= sparsity_threshold
    sparse = normalized * kept
    return sparse / sparse.sum(dim=-1, keepdim=True).clamp_min(eps)


def sta_loss(
    text_token_embeds: torch.Tensor,
    image_patch_embeds: torch.Tensor,
    token_mask: torch.BoolTensor,
    sparsity_threshold: float | None = None,
    temperature: float = 0.1,
    negatives: str = "tokens",
    sparsity: str = "threshold",
    top_k: int = 4,
    sparsity_temperature: float = 0.05,
    all_image_patch_embeds: torch.Tensor | None = None,
    row_offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    Sparse token alignment, vectorised over the batch.

    For sample i, the language-grouped vision embedding of token j is `c_ij = normalise(sum_k A[j,k] p_ik)`, with
    `A = sparse_token_patch_weights(<w_ij, p_ik>)`. With `negatives="tokens"` (SPARC's contrast), inside each
    report token j's positive is `c_ij` and its negatives are the `c_ij'` of the other valid tokens; the loss is
    symmetric (token→group and group→token) with temperature `temperature`, averaged over the valid tokens of a
    sample, then over the samples that have any.

    That contrast never compares images: any token-distinct choice of patches satisfies it, also one that ignores
    the image (a fixed anatomical or border position per word). `negatives="images"` ties a word to what its own
    image shows: token j of report i is grouped on every image m of the batch, `c_ij^m` from
    `A^m = sparse_token_patch_weights(<w_ij, p_mk>)`, and its logits `<w_ij, c_ij^m> / temperature` are contrasted
    over the images, its own image m = i the positive (token→image). `"tokens+images"` averages the two losses.
    The returned map is the paired image's `A` in every mode.

    Args:
        text_token_embeds (`torch.Tensor` of shape `(batch_size, num_tokens, dim)`): L2-normalised `w_ij`.
        image_patch_embeds (`torch.Tensor` of shape `(batch_size, num_patches, dim)`): L2-normalised `p_ik`.
        token_mask (`torch.BoolTensor` of shape `(batch_size, num_tokens)`): the tokens to align (no padding, no
            special tokens).
        sparsity_threshold (`float`, *optional*): defaults to `1 / num_patches`.
        temperature (`float`, *optional*, defaults to 0.1): temperature of the contrast.
        negatives (`str`, *optional*, defaults to `"tokens"`): `"tokens"`, `"images"` or `"tokens+images"`.
        sparsity, top_k, sparsity_temperature: how `A` selects patches ([`sparse_token_patch_weights`]).
        all_image_patch_embeds (`torch.Tensor` of shape `(global_batch_size, num_patches, dim)`, *optional*): the
            images the image contrast compares against (the global batch under data parallelism); defaults to
            `image_patch_embeds`.
        row_offset (`int`, *optional*, defaults to 0): index of this process's first image in
            `all_image_patch_embeds`.

    Returns:
        `(loss, weights)`: the scalar loss (0 when no sample has a valid token) and `A` of shape
        `(batch_size, num_tokens, num_patches)`, in float32 (float64 inputs stay float64), also under autocast.
    """
    if negatives not in STA_NEGATIVES:
        raise ValueError(f"`negatives` must be one of {STA_NEGATIVES}, got {negatives!r}.")
    with torch.autocast(device_type=image_patch_embeds.device.type, enabled=False):
        text_token_embeds, image_patch_embeds = upcast(text_token_embeds), upcast(image_patch_embeds)
        if sparsity_threshold is None:
            sparsity_threshold = 1.0 / image_patch_embeds.shape[1]
        sparsify = {
            "sparsity_threshold": sparsity_threshold,
            "sparsity": sparsity,
            "top_k": top_k,
            "sparsity_temperature": sparsity_temperature,
        }

        token_patch_similarity = torch.einsum("bld,bpd->blp", text_token_embeds, image_patch_embeds)
        weights = sparse_token_patch_weights(token_patch_similarity, **sparsify)
        losses = []
        if negatives in ("tokens", "tokens+images"):
            losses.append(
                sta_token_contrast_loss(text_token_embeds, image_patch_embeds, weights, token_mask, temperature)
            )
        if negatives in ("images", "tokens+images"):
            all_image_patch_embeds = (
                image_patch_embeds if all_image_patch_embeds is None else upcast(all_image_patch_embeds)
            )
            losses.append(
                sta_image_contrast_loss(
                    text_token_embeds, all_image_patch_embeds, token_mask, sparsify, temperature, row_offset
                )
            )
        return sum(losses) / len(losses), weights


def average_over_tokens(per_token: torch.Tensor, token_mask: torch.BoolTensor) -> torch.Tensor:
    """Mean over the valid tokens of each sample, then over the samples that have any (0 when none has)."""
    per_token = per_token * token_mask
    tokens_per_sample = token_mask.sum(dim=1)
    has_tokens = tokens_per_sample > 0
    per_sample = per_token.sum(dim=1) / tokens_per_sample.clamp_min(1)
    return (per_sample * has_tokens).sum() / has_tokens.sum().clamp_min(1)


def sta_token_contrast_loss(
    text_token_embeds: torch.Tensor,
    image_patch_embeds: torch.Tensor,
    weights: torch.Tensor,
    token_mask: torch.BoolTensor,
    temperature: float,
) -> torch.Tensor:
    """SPARC's within-report contrast of `sta_loss` (`negatives="tokens"`), from the weights `A`."""
    language_grouped_patch_embeds = F.normalize(torch.einsum("blp,bpd->bld", weights, image_patch_embeds), dim=-1)

    token_group_logits = torch.einsum("bld,bmd->blm", text_token_embeds, language_grouped_patch_embeds) / temperature
    unpaired = ~(token_mask[:, :, None] & token_mask[:, None, :])
    # in place: the division's backward does not read its output, so the logits need no copy
    token_group_logits.masked_fill_(unpaired, torch.finfo(token_group_logits.dtype).min)
    token_to_group = -token_group_logits.log_softmax(dim=2).diagonal(dim1=1, dim2=2)
    group_to_token = -token_group_logits.log_softmax(dim=1).diagonal(dim1=1, dim2=2)
    return average_over_tokens((token_to_group + group_to_token) / 2, token_mask)


def sta_image_contrast_loss(
    text_token_embeds: torch.Tensor,
    image_patch_embeds: torch.Tensor,
    token_mask: torch.BoolTensor,
    sparsify: dict,
    temperature: float,
    row_offset: int = 0,
) -> torch.Tensor:
    r"""
    The across-image contrast of `sta_loss` (`negatives="images"`): token j of report i is grouped on each image m,
    `c_ij^m = normalise(sum_k A^m[j,k] p_mk)`, and `-log softmax_m(<w_ij, c_ij^m> / temperature)` at
    `m = row_offset + i` is averaged like the token contrast. `sparsify` holds the keyword arguments of
    [`sparse_token_patch_weights`]. Memory grows as batch_size × global_batch_size × num_tokens × num_patches.
    """
    # [report, image, token, patch]
    cross_similarity = torch.einsum("ild,mpd->imlp", text_token_embeds, image_patch_embeds)
    cross_weights = sparse_token_patch_weights(cross_similarity, **sparsify)
    grouped = F.normalize(torch.einsum("imlp,mpd->imld", cross_weights, image_patch_embeds), dim=-1)
    token_image_logits = torch.einsum("ild,imld->ilm", text_token_embeds, grouped) / temperature
    positive = torch.arange(text_token_embeds.shape[0], device=token_image_logits.device) + row_offset
    log_probabilities = token_image_logits.log_softmax(dim=-1)
    token_to_image = -log_probabilities.gather(-1, positive[:, None, None].expand(-1, log_probabilities.shape[1], 1))
    return average_over_tokens(token_to_image.squeeze(-1), token_mask)


def total_loss(
    sia_weight: float, loss_sia: torch.Tensor | None, sta_weight: float, loss_sta: torch.Tensor | None
) -> torch.Tensor:
    """`sia_weight · L_SIA + sta_weight · L_STA` over the terms computed with a positive weight."""
    terms = ((sia_weight, loss_sia), (sta_weight, loss_sta))
    return sum(weight * term for weight, term in terms if term is not None and weight > 0)


# ---------------------------------------------------------------------------------------------------------------------
# Distributed: global-batch SIA
# ---------------------------------------------------------------------------------------------------------------------


def check_equal_batch_sizes(local_batch_size: int):
    r"""
    Raises a `ValueError` unless every process holds `local_batch_size` samples; the gather of
    [`gather_global_batch`] needs equal sizes. One collective and one host sync: called once per process (at the
    first gathered step), not at every step.
    """
    world_size = torch.distributed.get_world_size()
    sizes = [None] * world_size
    torch.distributed.all_gather_object(sizes, local_batch_size)
    if len(set(sizes)) > 1:
        raise ValueError(
            f"Global-batch SIA needs the same batch size on every process, got {sizes}; keep accelerate's "
            "`even_batches=True` (the default) or drop the last incomplete batch."
        )


_batch_sizes_checked = False
# weight of the past in the average of the per-grid-cell patch mean (`sta_center_patches`): about the last 10 batches,
# so that it follows the embeddings as they train
STA_PATCH_MEAN_MOMENTUM = 0.9


def gather_global_batch(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, report_embeds: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    r"""
    Gathers the global batch across processes (open_clip's local-loss scheme): image and report embeddings with
    gradients (the backward sums each process's contribution), `report_embeds` without. Each process then scores
    its local rows against the global columns, so that loss and gradients equal one process holding the batch.

    Every process must hold the same batch size, checked once per process by [`check_equal_batch_sizes`] (at the
    first eager call), not at every step. The functional collectives used here neither wait on the host nor break a
    `torch.compile` graph.

    Returns:
        `(all_image_embeds, all_text_embeds, all_report_embeds, row_offset)`; the inputs and 0 on one process.
    """
    global _batch_sizes_checked
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return image_embeds, text_embeds, report_embeds, 0
    world_size = torch.distributed.get_world_size()
    if world_size == 1:
        return image_embeds, text_embeds, report_embeds, 0
    if not _batch_sizes_checked and not torch.compiler.is_compiling():
        check_equal_batch_sizes(image_embeds.shape[0])
        _batch_sizes_checked = True

    group = torch.distributed.group.WORLD
    all_image_embeds = functional_collectives.all_gather_single_autograd(image_embeds.contiguous(), 0, group)
    all_text_embeds = functional_collectives.all_gather_single_autograd(text_embeds.contiguous(), 0, group)
    all_report_embeds = None
    if report_embeds is not None:
        all_report_embeds = functional_collectives.all_gather_single(report_embeds.detach().contiguous(), 0, group)
    row_offset = torch.distributed.get_rank() * image_embeds.shape[0]
    return all_image_embeds, all_text_embeds, all_report_embeds, row_offset


def gather_patch_embeds(image_patch_embeds: torch.Tensor) -> tuple[torch.Tensor, int]:
    r"""
    The global batch's patch embeddings for STA's image contrast, gathered with gradients like the image embeddings of
    [`gather_global_batch`] (same equal-size requirement); `(all_image_patch_embeds, row_offset)`, the input and 0 on
    one process.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return image_patch_embeds, 0
    if torch.distributed.get_world_size() == 1:
        return image_patch_embeds, 0
    group = torch.distributed.group.WORLD
    gathered = functional_collectives.all_gather_single_autograd(image_patch_embeds.contiguous(), 0, group)
    return gathered, torch.distributed.get_rank() * image_patch_embeds.shape[0]


def merge_content_words(
    token_features: torch.Tensor, word_ids: torch.LongTensor
) -> tuple[torch.Tensor, torch.BoolTensor]:
    r"""
    Averages the features of each word's subword tokens into one word feature (GLoRIA's word aggregation).

    Args:
        token_features (`torch.Tensor` of shape `(batch_size, num_tokens, dim)`).
        word_ids (`torch.LongTensor` of shape `(batch_size, num_tokens)`): the index of the content word each token
            belongs to (0, 1, ... within its report), -1 for tokens STA leaves out (special tokens, padding, stop
            words, punctuation).

    Returns:
        `(word_features, word_mask)` of shapes `(batch_size, num_words, dim)` and `(batch_size, num_words)`, with
        `num_words = num_tokens` (words a report does not have are masked).
    """
    # at most one word per token; a bound rather than the batch's largest id, which would be a host sync
    num_words = word_ids.shape[1]
    # (batch, word, token) membership: a token with id -1 belongs to no word
    membership = (word_ids[:, None, :] == torch.arange(num_words, device=word_ids.device)[None, :, None]).to(
        token_features.dtype
    )
    counts = membership.sum(dim=-1)
    word_features = torch.einsum("bwl,bld->bwd", membership, token_features) / counts.clamp_min(1)[..., None]
    return word_features, counts > 0


# ---------------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class SistaOutput(ModelOutput):
    r"""
    Output of [`SistaModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
            `sia_weight * loss_sia + sta_weight * loss_sta`.
        loss_sia (`torch.FloatTensor` of shape `()`, *optional*): the SIA loss (unweighted; not computed when
            `sia_weight=0`).
        loss_sta (`torch.FloatTensor` of shape `()`, *optional*): the STA loss (unweighted; not computed when
            `sta_weight=0`).
        logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            Scaled cosine similarity of every image with every report or prompt.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
            The transpose of `logits_per_image`.
        text_embeds (`torch.FloatTensor` of shape `(text_batch_size, projection_dim)`): L2-normalised reports.
        image_embeds (`torch.FloatTensor` of shape `(image_batch_size, projection_dim)`): L2-normalised images.
        text_token_embeds (`torch.FloatTensor` of shape `(text_batch_size, sequence_length, projection_dim)`):
            L2-normalised token embeddings (padding included; use the attention mask).
        image_patch_embeds (`torch.FloatTensor` of shape `(image_batch_size, num_patches, projection_dim)`):
            L2-normalised patch embeddings, the patch grid row by row (`num_patches = grid_height * grid_width`).
        token_patch_weights (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_patches)`, *optional*):
            The sparse STA weights `A`, the word-to-patch grounding map; rows of ignored tokens are zero. Reshape to
            `(batch_size, sequence_length, *patch_grid_size)` for maps over the image.
        text_model_output (`BaseModelOutput`): the text backbone's output.
        vision_model_output (`BaseModelOutput`): the vision backbone's output.
        patch_grid_size (`tuple[int, int]`): `(grid_height, grid_width)` of the patch grid, from the vision backbone's
            output (its feature map, or its token count at its output stride).
    """

    loss: torch.FloatTensor | None = None
    loss_sia: torch.FloatTensor | None = None
    loss_sta: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_token_embeds: torch.FloatTensor | None = None
    image_patch_embeds: torch.FloatTensor | None = None
    token_patch_weights: torch.FloatTensor | None = None
    text_model_output: ModelOutput | None = None
    vision_model_output: ModelOutput | None = None
    patch_grid_size: tuple[int, int] | None = None

    def to_tuple(self) -> tuple[Any]:
        return tuple(value.to_tuple() if isinstance(value, ModelOutput) else value for value in self.values())


# ---------------------------------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------------------------------
# Shape and dtype checks read only metadata and always run. Value checks (id ranges, finiteness) read the tensor on the
# host: they run for CPU tensors and outside training, never in a compiled graph, so a training step on an accelerator
# stays free of host syncs. A data collator can call the same functions on its CPU batches.


def values_are_checkable(tensor: torch.Tensor, training: bool = True) -> bool:
    """
    Whether checks that read `tensor`'s values run: for a CPU tensor, where reading costs nothing, or outside training
    (`training=False`); never in a compiled graph, whose batches are to be validated before the step.
    """
    return not torch.compiler.is_compiling() and (tensor.device.type == "cpu" or not training)


def all_finite(tensor: torch.Tensor) -> bool:
    """
    Whether every value of `tensor` is finite. One sum decides in the usual case: it is finite only when every value
    is (a NaN or infinity carries through it); only a sum that is not finite, from bad values or an overflow of large
    finite ones, pays for the elementwise check. On a batch of images: one pass over the pixels instead of several.
    """
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _check_index_tensor(tensor, name: str, shape: str) -> None:
    if not torch.is_tensor(tensor):
        raise TypeError(f"`{name}` must be a LongTensor of shape {shape}, got {type(tensor).__name__}.")
    if tensor.dtype not in (torch.int64, torch.int32):  # the only index types of embedding lookups
        raise TypeError(f"`{name}` must be an integer tensor of dtype torch.int64 or torch.int32, got {tensor.dtype}.")


# Text towers whose position ids start after the padding index (RoBERTa's `create_position_ids_from_input_ids`):
# `pad_token_id + 1` of their `max_position_embeddings` positions are never a token's (514 positions, 512 tokens).
PADDING_OFFSET_POSITION_MODEL_TYPES = (
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer", "ibert", "mpnet",
    "roberta-prelayernorm", "xmod",
)


def text_max_positions(text_config) -> int | None:
    """
    The most tokens (special tokens included) the text tower takes: `max_position_embeddings`, less the padding
    offset of RoBERTa-style towers (`PADDING_OFFSET_POSITION_MODEL_TYPES`); `None` when the config sets no limit.
    """
    max_positions = getattr(text_config, "max_position_embeddings", None)
    if not isinstance(max_positions, int) or isinstance(max_positions, bool):
        return None
    if getattr(text_config, "model_type", None) in PADDING_OFFSET_POSITION_MODEL_TYPES:
        pad_token_id = getattr(text_config, "pad_token_id", None)
        return max_positions - (1 if pad_token_id is None else pad_token_id) - 1
    return max_positions


def check_text_inputs(
    input_ids: torch.Tensor,
    text_config,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    training: bool = True,
) -> None:
    r"""
    Check tokenised reports against the text tower before its embeddings fail with an unexplained `IndexError` or
    size mismatch.

    Always checked (no host sync): `input_ids` is a non-empty 2-d int64 or int32 tensor `(batch_size,
    sequence_length)` no longer than `text_config.max_position_embeddings`; `attention_mask` and `token_type_ids`
    are tensors of its shape. Checked only where [`values_are_checkable`] (a CPU tensor, or `training=False`; never
    under `torch.compile`): every id lies in `[0, text_config.vocab_size)`, every token type in `[0,
    text_config.type_vocab_size)`, every position in `[0, text_config.max_position_embeddings)`, and the attention
    mask holds only 0 and 1.

    Args:
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): token ids.
        text_config (`PreTrainedConfig`): the text tower's config; limits it does not define are not checked.
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*).
        token_type_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*).
        position_ids (`torch.LongTensor`, *optional*).
        training (`bool`, *optional*, defaults to `True`): whether this is a training step (see
            [`values_are_checkable`]).

    Raises:
        `TypeError` for a non-tensor or non-integer `input_ids`, `ValueError` for a wrong shape, a sequence longer
        than the text tower's positions or ids outside its vocabulary.
    """
    _check_index_tensor(input_ids, "input_ids", "(batch_size, sequence_length)")
    if input_ids.dim() != 2:
        raise ValueError(
            f"`input_ids` must have shape (batch_size, sequence_length), got {tuple(input_ids.shape)}; a single "
            "report needs a batch dimension (`input_ids[None]`)."
        )
    if 0 in input_ids.shape:
        raise ValueError(
            f"`input_ids` must hold at least one report and one token, got shape {tuple(input_ids.shape)}."
        )
    max_positions = getattr(text_config, "max_position_embeddings", None)
    max_tokens = text_max_positions(text_config)
    if max_tokens is not None and input_ids.shape[1] > max_tokens:
        offset = "" if max_tokens == max_positions else f" less its padding offset of {max_positions - max_tokens}"
        raise ValueError(
            f"`input_ids` has {input_ids.shape[1]} tokens, more than the text tower's {max_tokens} positions "
            f"(max_position_embeddings={max_positions}{offset}); truncate the reports (the processor does so with "
            "`truncation=True` and the tokenizer's `model_max_length`, or pass `max_length`)."
        )
    for name, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if tensor is None:
            continue
        if not torch.is_tensor(tensor):
            raise TypeError(f"`{name}` must be a tensor of the shape of `input_ids`, got {type(tensor).__name__}.")
        if tensor.shape != input_ids.shape:
            raise ValueError(
                f"`{name}` must have the shape of `input_ids` {tuple(input_ids.shape)}, got {tuple(tensor.shape)}."
            )
    if position_ids is not None:
        _check_index_tensor(position_ids, "position_ids", "(batch_size, sequence_length)")
    if not values_are_checkable(input_ids, training):
        return
    if attention_mask is not None and values_are_checkable(attention_mask, training):
        if ((attention_mask != 0) & (attention_mask != 1)).any():
            values = attention_mask.unique().tolist()
            raise ValueError(f"`attention_mask` must hold only 0 (padding) and 1 (token), got values {values}.")
    vocab_size = getattr(text_config, "vocab_size", None)
    if isinstance(vocab_size, int) and (input_ids.min() < 0 or input_ids.max() >= vocab_size):
        raise ValueError(
            f"`input_ids` must lie in [0, {vocab_size - 1}] (the text tower's vocab_size={vocab_size}), got ids from "
            f"{input_ids.min().item()} to {input_ids.max().item()}: was the tokenizer made for this model?"
        )
    type_vocab_size = getattr(text_config, "type_vocab_size", None)
    checkable_types = token_type_ids is not None and values_are_checkable(token_type_ids, training)
    if checkable_types and isinstance(type_vocab_size, int):
        if token_type_ids.min() < 0 or token_type_ids.max() >= type_vocab_size:
            raise ValueError(
                f"`token_type_ids` must lie in [0, {type_vocab_size - 1}] (type_vocab_size={type_vocab_size}), got "
                f"values from {token_type_ids.min().item()} to {token_type_ids.max().item()}."
            )
    if position_ids is not None and isinstance(max_positions, int) and values_are_checkable(position_ids, training):
        if position_ids.numel() and (position_ids.min() < 0 or position_ids.max() >= max_positions):
            raise ValueError(
                f"`position_ids` must lie in [0, {max_positions - 1}] (max_position_embeddings={max_positions}), got "
                f"values from {position_ids.min().item()} to {position_ids.max().item()}."
            )


def check_report_embeds(report_embeds: torch.Tensor, batch_size: int, training: bool = True) -> None:
    r"""
    Check the report-similarity embeddings `e_i` that SIA compares to find false negatives.

    Always checked (no host sync): a real-valued tensor of shape `(batch_size, dim)`; integer or boolean label
    vectors are allowed (SIA normalises them as floats). Checked only where [`values_are_checkable`] (a CPU tensor,
    or `training=False`; never under `torch.compile`): every value is finite; a NaN row would silently find no false
    negative, turning SIA into plain CLIP for that sample. An all-zero row is allowed and is similar to no other
    report.

    Raises:
        `TypeError` for a non-tensor or complex tensor, `ValueError` for a wrong shape or non-finite values.
    """
    if not torch.is_tensor(report_embeds) or report_embeds.is_complex():
        got = f"complex {report_embeds.dtype}" if torch.is_tensor(report_embeds) else type(report_embeds).__name__
        raise TypeError(f"`report_embeds` must be a float tensor of shape ({batch_size}, dim), got a {got}.")
    if report_embeds.dim() != 2 or report_embeds.shape[0] != batch_size or report_embeds.shape[1] == 0:
        raise ValueError(
            f"`report_embeds` must have shape ({batch_size}, dim) with dim >= 1, got {tuple(report_embeds.shape)}."
        )
    if report_embeds.is_floating_point() and values_are_checkable(report_embeds, training) and not all_finite(
        report_embeds
    ):
        bad_rows = (~torch.isfinite(report_embeds)).any(dim=1).nonzero().flatten().tolist()
        if bad_rows:
            raise ValueError(f"`report_embeds` must be finite, got NaN or infinite values in rows {bad_rows}.")


def check_label_tensor(labels, name: str = "labels", training: bool = True) -> None:
    r"""
    Check that a task head's `labels` are a tensor and, where [`values_are_checkable`] (a CPU tensor, or
    `training=False`; never under `torch.compile`), that float labels are finite: a NaN label would silently make the
    loss NaN.

    Raises:
        `TypeError` for a non-tensor, `ValueError` for NaN or infinite values.
    """
    if not torch.is_tensor(labels):
        raise TypeError(f"`{name}` must be a tensor, got {type(labels).__name__}.")
    if labels.is_floating_point() and values_are_checkable(labels, training) and not all_finite(labels):
        raise ValueError(f"`{name}` must be finite, got NaN or infinite values.")


def check_local_checkpoint(folder: str | os.PathLike, needs_config: bool = True) -> None:
    r"""
    Check a local checkpoint folder before transformers reads it, so that a missing `config.json` or a truncated
    `*.safetensors` file is named (transformers reports the first as a config of an unknown model type and the
    second as a header error without a file name). Anything that is not a local folder (a Hub id) is left to
    transformers.

    Raises:
        `FileNotFoundError` for a path that cannot be a Hub id (absolute, or starting with `.` or `~`) and does not
        exist, or when `needs_config` and the folder has no `config.json`; `OSError` naming a
        `*.safetensors` file whose header or size is inconsistent (cut short by an interrupted copy or download).
    """
    if not os.path.exists(folder) and (os.path.isabs(folder) or str(folder).startswith((".", "~"))):
        raise FileNotFoundError(f"The checkpoint folder {str(folder)!r} does not exist.")
    if not os.path.isdir(folder):
        return
    if needs_config and not os.path.isfile(os.path.join(folder, CONFIG_NAME)):
        raise FileNotFoundError(
            f"{str(folder)!r} has no {CONFIG_NAME}: a SISTA checkpoint folder holds {CONFIG_NAME} and "
            f"model.safetensors as `save_pretrained` writes them; found {sorted(os.listdir(folder))[:10]}."
        )
    for weights_file in sorted(glob.glob(os.path.join(glob.escape(str(folder)), "*.safetensors"))):
        try:
            with safe_open(weights_file, framework="pt"):
                pass
        except SafetensorError as error:
            raise OSError(
                f"{weights_file} is not a complete safetensors file ({error}); it was probably cut short: save or "
                "download it again."
            ) from error


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------


def pooling_layer_kwargs(config, keep_pooler: bool) -> dict:
    """`{"add_pooling_layer": keep_pooler}` for a backbone class that takes the argument (BERT, ViT, ...), else `{}`."""
    if "add_pooling_layer" in inspect.signature(MODEL_MAPPING[type(config)]).parameters:
        return {"add_pooling_layer": keep_pooler}
    return {}


def backbone_from_config(config, keep_pooler: bool = False) -> PreTrainedModel:
    """An `AutoModel` backbone, without its pooler where the class has one unless `keep_pooler`: SISTA pools itself
    (`vision_pooling="cls"` or `"mean"`), and an unused pooler would leave parameters without gradients under DDP."""
    return AutoModel.from_config(config, **pooling_layer_kwargs(config, keep_pooler))


def freeze_mask_token(vision_model: nn.Module):
    """SISTA never masks image patches, so a backbone's `mask_token` (Dinov2 always has one) would get no gradient,
    which DDP without `find_unused_parameters` rejects: it is frozen."""
    for name, parameter in vision_model.named_parameters():
        if name.rsplit(".", 1)[-1] == "mask_token":
            parameter.requires_grad_(False)


def vision_feature_size(vision_model: PreTrainedModel) -> int:
    r"""
    Channels of a vision backbone's last hidden state: the model's own `num_features` where it has one (Swin,
    FocalNet), else its config's last `hidden_sizes` entry (ResNet, ConvNeXt) or `hidden_size` (ViT, DeiT, BEiT,
    Dinov2). The forward pass checks it against the width the backbone actually returns.
    """
    num_features = getattr(vision_model, "num_features", None)
    if isinstance(num_features, int):
        return num_features
    config = vision_model.config
    hidden_sizes = getattr(config, "hidden_sizes", None)
    hidden_size = getattr(config, "hidden_size", None)
    if hidden_sizes and isinstance(hidden_size, int) and hidden_size != hidden_sizes[-1]:
        raise ValueError(
            f"The vision backbone {config.model_type!r} has `hidden_size={hidden_size}` and `hidden_sizes="
            f"{list(hidden_sizes)}`: SISTA cannot tell which one is the width of its last hidden state."
        )
    if hidden_sizes:
        return int(hidden_sizes[-1])
    if isinstance(hidden_size, int):
        return hidden_size
    raise ValueError(
        f"The vision backbone {config.model_type!r} has neither `hidden_sizes` nor an int `hidden_size` in its config "
        f"(nor a `num_features` attribute): SISTA cannot size its projection."
    )


def vision_output_stride(vision_config) -> int | None:
    r"""
    Pixels per cell of a vision backbone's last feature map, from its config: `patch_size` for a ViT-like tower,
    `patch_size · 2^(len(depths) - 1)` for a hierarchical one that halves the map at every later stage (Swin,
    ConvNeXt), `4 · 2^(len(hidden_sizes) - 1)` for ResNet (stride-4 stem, times 2 with `downsample_in_first_stage`).
    `None` when the config does not say (no int `patch_size`).
    """
    if vision_config.model_type == "resnet":
        first_stage = 2 if vision_config.downsample_in_first_stage else 1
        return 4 * first_stage * 2 ** (len(vision_config.hidden_sizes) - 1)
    patch_size = getattr(vision_config, "patch_size", None)
    if not isinstance(patch_size, int):
        return None
    depths = getattr(vision_config, "depths", None)
    if isinstance(depths, (list, tuple)) and len(depths) > 1:
        return patch_size * 2 ** (len(depths) - 1)
    return patch_size


def token_grid_size(vision_config, image_size: tuple[int, int]) -> tuple[int, int]:
    r"""
    `(height, width)` of the patch grid that a token-sequence backbone lays over `image_size` pixels: the image size
    divided by [`vision_output_stride`], rounded down for a ViT-like tower (its patch convolution drops the remainder)
    and up for a hierarchical one (Swin pads to a multiple of its patch and merges with padding).
    """
    stride = vision_output_stride(vision_config)
    if stride is None:
        raise ValueError(
            f"The vision backbone {vision_config.model_type!r} returns a token sequence, but its config has no int "
            f"`patch_size` (got {getattr(vision_config, 'patch_size', None)!r}) to lay the tokens on a patch grid: "
            "SISTA needs a backbone whose `last_hidden_state` is a patch grid (batch_size, channels, height, width) or "
            "patch tokens of a known `patch_size` (ViT, DeiT, BEiT, Dinov2, Swin)."
        )
    hierarchical = isinstance(getattr(vision_config, "depths", None), (list, tuple))
    rounding = math.ceil if hierarchical else math.floor
    return rounding(image_size[0] / stride), rounding(image_size[1] / stride)


def split_vision_states(
    vision_outputs: ModelOutput, pixel_values: torch.Tensor, vision_config, pooling: str
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    r"""
    Splits a vision backbone's output into the pooled feature and the patch features.

    Args:
        vision_outputs (`ModelOutput`): the backbone's output. Its `last_hidden_state` is `(batch_size,
            hidden_size, height, width)` for a convolutional backbone (ResNet, ConvNeXt), or `(batch_size,
            sequence_length, hidden_size)` for a token-sequence one, whose patch tokens follow its prefix tokens
            ([CLS], DeiT's distillation token, Dinov2's registers; none for Swin).
        pixel_values (`torch.Tensor`): the input images, whose size gives the patch grid of a token sequence.
        vision_config (`PretrainedConfig`): the backbone's config (see [`token_grid_size`]).
        pooling (`str`): `"cls"` takes the first token (a class token), `"mean"` averages the patch features,
            `"pooler"` takes the backbone's own `pooler_output`.

    Returns:
        `(pooled, patch_states, grid_size)`: `(batch_size, hidden_size)`, `(batch_size, num_patches, hidden_size)`
        and the `(height, width)` of the patch grid; `patch_states` lists the grid row by row.
    """
    hidden_states = vision_outputs.last_hidden_state
    backbone = f"the vision backbone {vision_config.model_type!r}"
    if hidden_states.dim() == 4:
        grid_size = tuple(hidden_states.shape[-2:])
        patch_states = hidden_states.flatten(2).transpose(1, 2)
        num_prefix_tokens = 0
    elif hidden_states.dim() == 3:
        grid_size = token_grid_size(vision_config, tuple(pixel_values.shape[-2:]))
        num_prefix_tokens = hidden_states.shape[1] - grid_size[0] * grid_size[1]
        if num_prefix_tokens < 0:
            raise ValueError(
                f"The vision backbone {vision_config.model_type!r} returned {hidden_states.shape[1]} tokens, fewer "
                f"than the {grid_size} patch grid of {tuple(pixel_values.shape[-2:])} images at its output stride "
                f"{vision_output_stride(vision_config)}."
            )
        patch_states = hidden_states[:, num_prefix_tokens:]
    else:
        raise ValueError(
            f"The vision backbone {vision_config.model_type!r} returned a `last_hidden_state` of shape "
            f"{tuple(hidden_states.shape)}, which holds no patch grid: SISTA needs (batch_size, channels, height, "
            "width) or (batch_size, tokens, channels)."
        )
    if pooling == "cls":
        if num_prefix_tokens == 0:
            raise ValueError(
                f"`vision_pooling='cls'` needs a class token, but {backbone} returns patch features only; use "
                "vision_pooling='mean' or 'pooler'."
            )
        pooled = hidden_states[:, 0]
    elif pooling == "pooler":
        pooler_output = vision_outputs.get("pooler_output")
        if pooler_output is None:
            raise ValueError(
                f"`vision_pooling='pooler'` needs the backbone's `pooler_output`, but {backbone} returned none (a "
                "backbone loaded without its pooling layer, e.g. with `add_pooling_layer=False`)."
            )
        pooled = pooler_output.flatten(1)  # ResNet pools to (batch_size, channels, 1, 1)
        if pooled.shape[-1] != patch_states.shape[-1]:
            raise ValueError(
                f"`vision_pooling='pooler'`: the `pooler_output` of {backbone} has width {pooled.shape[-1]}, its patch "
                f"features {patch_states.shape[-1]}; the shared projection needs one width; use 'cls' or 'mean'."
            )
    else:
        pooled = patch_states.mean(dim=1)
    return pooled, patch_states, grid_size


def check_vision_feature_size(patch_states: torch.Tensor, expected: int, vision_config):
    """Raises a `ValueError` when the backbone's features are not as wide as the layers SISTA built on them."""
    if patch_states.shape[-1] != expected:
        raise ValueError(
            f"The vision backbone {vision_config.model_type!r} returned features of width {patch_states.shape[-1]}, "
            f"but its config gives {expected} (see `vision_feature_size`), which sized the layers on top of it."
        )


class SistaPreTrainedModel(PreTrainedModel):
    config_class = SistaConfig
    base_model_prefix = "sista"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = []
    _supports_sdpa = True

    def __init__(self, config: SistaConfig, *inputs, **kwargs):
        # by model_type, not isinstance: remote code may load the config module under another package name
        if getattr(config, "model_type", None) != SistaConfig.model_type:
            raise TypeError(
                f"`config` must be a SistaConfig (model_type {SistaConfig.model_type!r}), got a "
                f"{type(config).__name__} with model_type {getattr(config, 'model_type', None)!r}."
            )
        super().__init__(config, *inputs, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, SistaModel):
            nn.init.constant_(module.logit_scale, self.config.logit_scale_init_value)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        r"""
        [`PreTrainedModel.from_pretrained`] that first checks that the checkpoint is a SISTA one (a SistaModel or a
        SISTA task head): a checkpoint of another architecture would otherwise load as a SISTA config with default
        backbones, leaving the weights silently random.
        """
        if pretrained_model_name_or_path is not None:
            subfolder = kwargs.get("subfolder")
            check_local_checkpoint(
                os.path.join(pretrained_model_name_or_path, subfolder) if subfolder else pretrained_model_name_or_path,
                needs_config=kwargs.get("config") is None,
            )
        if kwargs.get("config") is None and pretrained_model_name_or_path is not None:
            hub_kwargs = {
                name: kwargs[name]
                for name in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
                if name in kwargs
            }
            config_dict, _ = SistaConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)
            if not isinstance(config_dict, dict):
                raise ValueError(
                    f"The {CONFIG_NAME} of {str(pretrained_model_name_or_path)!r} must hold a JSON object, got a "
                    f"{type(config_dict).__name__}."
                )
            model_type = config_dict.get("model_type")
            if model_type != SistaConfig.model_type:
                raise ValueError(
                    f"{str(pretrained_model_name_or_path)!r} is not a SISTA checkpoint: its config has model_type "
                    f"{model_type!r}, expected {SistaConfig.model_type!r} (a folder saved by SistaModel or a SISTA "
                    f"task head)."
                )
        config = kwargs.get("config")
        if config is not None and not isinstance(config, (str, os.PathLike)):
            # AutoModel passes the config it read through the folder's auto_map, whatever model_type it says
            model_type = getattr(config, "model_type", None)
            if model_type != SistaConfig.model_type:
                subfolder = kwargs.get("subfolder") or ""
                source = os.path.join(str(pretrained_model_name_or_path), subfolder, CONFIG_NAME)
                raise ValueError(
                    f"{source} says model_type {model_type!r}, expected {SistaConfig.model_type!r}: it does not "
                    "describe a SISTA model (a folder saved by SistaModel or a SISTA task head)."
                )
        if kwargs.get("ignore_mismatched_sizes"):
            loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
            model = loaded[0] if isinstance(loaded, tuple) else loaded
        else:
            # transformers refuses weights of another shape with a message that names neither the folder nor the
            # weights: load them aside, then refuse naming both
            wants_info = kwargs.pop("output_loading_info", False)
            model, loading_info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, ignore_mismatched_sizes=True, output_loading_info=True,
                **kwargs,
            )
            mismatched = [
                f"{key}: checkpoint {tuple(saved)} vs config {tuple(expected)}"
                for key, saved, expected in loading_info.get("mismatched_keys", [])
            ]
            if mismatched:
                raise ValueError(
                    f"{str(pretrained_model_name_or_path)!r}: {len(mismatched)} weights disagree in shape with its "
                    f"{CONFIG_NAME} ({'; '.join(mismatched[:3])}{' ...' if len(mismatched) > 3 else ''}). Was the "
                    "config edited, or the weights copied from another model? (`ignore_mismatched_sizes=True` "
                    "re-initialises them at random.)"
                )
            loaded = (model, loading_info) if wants_info else model
        freeze_mask_token(model.vision_model)  # loading replaces the parameter that `__init__` froze
        return loaded

    @property
    def patch_size(self) -> int | None:
        patch_size = getattr(self.config.vision_config, "patch_size", None)
        return patch_size if isinstance(patch_size, int) else None

    def _check_pixel_values(self, pixel_values: torch.Tensor | None):
        if pixel_values is None:
            raise ValueError(
                "`pixel_values` is required: a float tensor of shape (batch_size, channels, height, width)."
            )
        if not torch.is_tensor(pixel_values) or not pixel_values.is_floating_point():
            raise TypeError(f"`pixel_values` must be a float tensor, got {type(pixel_values).__name__}.")
        expected_channels = getattr(self.config.vision_config, "num_channels", None)
        if pixel_values.dim() == 4 and pixel_values.shape[0] == 0:
            raise ValueError(f"`pixel_values` must hold at least one image, got shape {tuple(pixel_values.shape)}.")
        if pixel_values.dim() != 4 or (expected_channels is not None and pixel_values.shape[1] != expected_channels):
            raise ValueError(
                f"`pixel_values` must have shape (batch_size, {expected_channels}, height, width) for this vision "
                f"config, got {tuple(pixel_values.shape)}."
            )
        if self.patch_size is not None and min(pixel_values.shape[-2:]) < self.patch_size:
            raise ValueError(
                f"`pixel_values` of size {tuple(pixel_values.shape[-2:])} is smaller than one patch "
                f"({self.patch_size} pixels): images must be at least {self.patch_size}×{self.patch_size}."
            )
        if values_are_checkable(pixel_values, self.training) and not all_finite(pixel_values):
            raise ValueError("`pixel_values` must be finite, got NaN or infinite values.")


class SistaModel(SistaPreTrainedModel):
    r"""
    SISTA: a vision backbone and a text backbone with linear projections into a shared space, trained with SIA on
    the global embeddings and STA on the patch and token embeddings. The projections are shared between the global
    and the local embeddings, so that zero-shot scores and grounding maps live in one space.

    Example:

    ```python
    >>> from modeling_sista import SistaModel
    >>> from processing_sista import SistaProcessor

    >>> model = SistaModel.from_pretrained("path/to/sista")
    >>> processor = SistaProcessor.from_pretrained("path/to/sista")
    >>> inputs = processor(text=["Small left pleural effusion."], images=[image], return_tensors="pt", padding=True)
    >>> outputs = model(**inputs, output_token_patch_weights=True)
    >>> outputs.logits_per_image, outputs.token_patch_weights.shape
    ```"""

    main_input_name = "input_ids"

    def __init__(
        self,
        config: SistaConfig,
        vision_model: PreTrainedModel | None = None,
        text_model: PreTrainedModel | None = None,
    ):
        super().__init__(config)
        self.vision_model = (
            vision_model
            if vision_model is not None
            else backbone_from_config(config.vision_config, keep_pooler=config.vision_pooling == "pooler")
        )
        self.text_model = text_model if text_model is not None else backbone_from_config(config.text_config)
        # one source of truth for the sub-configs, as VisionTextDualEncoderModel does
        self.vision_model.config = self.config.vision_config
        self.text_model.config = self.config.text_config
        freeze_mask_token(self.vision_model)

        self.visual_projection = nn.Linear(vision_feature_size(self.vision_model), config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        # the temperature is trained by SIA alone; without SIA it would be a parameter without gradient, which DDP
        # (find_unused_parameters=False) rejects. Shape (1,), not a scalar: FSDP2 cannot shard 0-dim parameters.
        self.logit_scale = nn.Parameter(
            torch.full((1,), config.logit_scale_init_value), requires_grad=config.sia_weight > 0
        )
        if config.sta_center_patches:
            # the per-grid-cell mean patch embedding used in evaluation, saved with the weights; its grid is known at
            # the first training step (empty until then: no centring), and the config keeps its size for loading
            self.register_buffer("sta_patch_mean", torch.zeros(config.sta_patch_mean_cells, config.projection_dim))
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The text backbone's token embeddings (accelerate's FSDP2 preparation shards them as a unit of their own)."""
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.text_model.set_input_embeddings(value)

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str,
        text_model_name_or_path: str,
        tokenizer=None,
        vision_kwargs: dict | None = None,
        text_kwargs: dict | None = None,
        **config_kwargs,
    ) -> "SistaModel":
        r"""
        Builds SISTA from two existing checkpoints; the projections and the logit scale are new.

        Args:
            vision_model_name_or_path (`str`): a Hub id or local folder of any `AutoModel` vision checkpoint.
            text_model_name_or_path (`str`): a Hub id or local folder of any `AutoModel` text checkpoint.
            tokenizer (`PreTrainedTokenizerBase`, *optional*): when given, its special tokens become
                `sta_ignore_token_ids` (unless `config_kwargs` sets them).
            vision_kwargs, text_kwargs (`dict`, *optional*): passed to the backbones' `from_pretrained`.
            config_kwargs: other [`SistaConfig`] fields, e.g. `projection_dim=512, sia_threshold=0.9`.
        """
        vision_config = AutoConfig.from_pretrained(vision_model_name_or_path)
        text_config = AutoConfig.from_pretrained(text_model_name_or_path)
        vision_kwargs, text_kwargs = dict(vision_kwargs or {}), dict(text_kwargs or {})
        keep_vision_pooler = config_kwargs.get("vision_pooling", SistaConfig.vision_pooling) == "pooler"
        for model_config, kwargs, keep_pooler in (
            (vision_config, vision_kwargs, keep_vision_pooler),
            (text_config, text_kwargs, False),
        ):
            for name, value in pooling_layer_kwargs(model_config, keep_pooler).items():
                kwargs.setdefault(name, value)
        vision_model = AutoModel.from_pretrained(vision_model_name_or_path, **vision_kwargs)
        text_model = AutoModel.from_pretrained(text_model_name_or_path, **text_kwargs)
        if tokenizer is not None:
            config_kwargs.setdefault("sta_ignore_token_ids", sorted(set(tokenizer.all_special_ids)))
        config = SistaConfig.from_vision_text_configs(vision_model.config, text_model.config, **config_kwargs)
        return cls(config, vision_model=vision_model, text_model=text_model)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # `register_for_auto_class` keeps one auto class per model class, but the zero-shot-image-classification
        # pipeline only looks up this one for remote code, so it is written beside `AutoModel`.
        module_name = type(self).__module__.split(".")[-1]
        self.config.auto_map = {
            **(getattr(self.config, "auto_map", None) or {}),
            "AutoModelForZeroShotImageClassification": f"{module_name}.{type(self).__name__}",
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    # -- encoders -----------------------------------------------------------------------------------------------------

    def encode_image(
        self, pixel_values: torch.Tensor, **kwargs
    ) -> tuple[ModelOutput, torch.Tensor, torch.Tensor, tuple[int, int]]:
        r"""
        Returns `(vision_outputs, image_features, patch_features, patch_grid_size)`: the backbone output, the projected
        global feature `(batch_size, projection_dim)` and the projected patch features `(batch_size, num_patches,
        projection_dim)`, both before L2 normalisation, and the `(height, width)` of the patch grid that the
        backbone's output gives (`patch_features` lists it row by row).
        """
        self._check_pixel_values(pixel_values)
        vision_outputs = self.vision_model(pixel_values=pixel_values, return_dict=True, **kwargs)
        pooled, patch_states, grid_size = split_vision_states(
            vision_outputs, pixel_values, self.config.vision_config, self.config.vision_pooling
        )
        check_vision_feature_size(patch_states, self.visual_projection.in_features, self.config.vision_config)
        return vision_outputs, self.visual_projection(pooled), self.visual_projection(patch_states), grid_size

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[ModelOutput, torch.Tensor, torch.Tensor]:
        r"""
        Returns `(text_outputs, text_features, token_features)`: the backbone output, the projected global feature
        `(batch_size, projection_dim)` and the projected token features `(batch_size, sequence_length,
        projection_dim)`, both before L2 normalisation.
        """
        if input_ids is None:
            raise ValueError("`input_ids` is required: a LongTensor of shape (batch_size, sequence_length).")
        check_text_inputs(
            input_ids,
            self.config.text_config,
            attention_mask,
            token_type_ids,
            kwargs.get("position_ids"),
            training=self.training,
        )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if values_are_checkable(attention_mask, self.training):
            empty_rows = (attention_mask.sum(dim=1) == 0).nonzero().flatten().tolist()
            if empty_rows:
                raise ValueError(f"`attention_mask` has no token for rows {empty_rows}: every report needs a token.")
        if token_type_ids is not None:  # not every text backbone takes them (e.g. DistilBERT)
            kwargs["token_type_ids"] = token_type_ids
        text_outputs = self.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        token_states = text_outputs.last_hidden_state
        if self.config.text_pooling == "cls":
            pooled = token_states[:, 0]
        else:
            mask = attention_mask[..., None].to(token_states.dtype)
            # a row without tokens pools to zeros rather than NaN (checking for one here would sync with the host)
            pooled = (token_states * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)
        return text_outputs, self.text_projection(pooled), self.text_projection(token_states)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        r"""
        Returns the vision backbone's output with `pooler_output` replaced by the projected image features of shape
        `(batch_size, projection_dim)` (not normalised), as CLIP does in transformers 5.
        """
        vision_outputs, image_features, _, _ = self.encode_image(pixel_values, **kwargs)
        return BaseModelOutputWithPooling(
            last_hidden_state=vision_outputs.last_hidden_state,
            pooler_output=image_features,
            hidden_states=vision_outputs.get("hidden_states"),
            attentions=vision_outputs.get("attentions"),
        )

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        r"""
        Returns the text backbone's output with `pooler_output` replaced by the projected report features of shape
        `(batch_size, projection_dim)` (not normalised), as CLIP does in transformers 5.
        """
        text_outputs, text_features, _ = self.encode_text(input_ids, attention_mask, token_type_ids, **kwargs)
        return BaseModelOutputWithPooling(
            last_hidden_state=text_outputs.last_hidden_state,
            pooler_output=text_features,
            hidden_states=text_outputs.get("hidden_states"),
            attentions=text_outputs.get("attentions"),
        )

    # -- losses -------------------------------------------------------------------------------------------------------

    def sta_token_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.BoolTensor:
        """The tokens STA aligns: attended and not one of `config.sta_ignore_token_ids`."""
        token_mask = attention_mask.bool()
        if self.config.sta_ignore_token_ids:
            token_mask = token_mask & ~torch.isin(input_ids, self._sta_ignored_ids(input_ids.device))
        return token_mask

    def _sta_ignored_ids(self, device: torch.device) -> torch.Tensor:
        """`config.sta_ignore_token_ids` as a tensor on `device`, built once rather than copied from the host every
        step (rebuilt when the ids or the device change)."""
        ids = tuple(self.config.sta_ignore_token_ids)
        cached = getattr(self, "_sta_ignored_ids_cache", None)
        if cached is None or cached[0] != ids or cached[1].device != device:
            cached = (ids, torch.tensor(ids, device=device))
            self._sta_ignored_ids_cache = cached
        return cached[1]

    def sta_weight_at(self, training_step: int | None) -> float:
        """STA's weight at `training_step` (`config.sta_start_step`, then a linear ramp over
        `config.sta_warmup_steps`); `config.sta_weight` in evaluation mode or without a warm start."""
        config = self.config
        if not self.training or (config.sta_start_step == 0 and config.sta_warmup_steps == 0):
            return config.sta_weight
        if training_step is None:
            raise ValueError(
                f"`config.sta_start_step`={config.sta_start_step} / `sta_warmup_steps`={config.sta_warmup_steps} "
                "need the step: pass `training_step` (0-based optimizer step) to `forward` in training mode."
            )
        if training_step < config.sta_start_step:
            return 0.0
        if config.sta_warmup_steps == 0:
            return config.sta_weight
        return config.sta_weight * min(1.0, (training_step - config.sta_start_step + 1) / config.sta_warmup_steps)

    def center_patch_embeds(self, image_patch_embeds: torch.Tensor) -> torch.Tensor:
        """`config.sta_center_patches`: the patch embeddings minus their grid cell's mean (the global batch's,
        without gradient, in training, updating the `sta_patch_mean` average; that average in evaluation),
        re-normalised."""
        if self.training:
            cell_mean = image_patch_embeds.detach().float().mean(dim=0)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                cell_mean = functional_collectives.all_reduce(cell_mean, "avg", torch.distributed.group.WORLD)
            with torch.no_grad():
                if self.sta_patch_mean.shape != cell_mean.shape:
                    self.sta_patch_mean = cell_mean.clone()
                    self.config.sta_patch_mean_cells = cell_mean.shape[0]
                else:
                    self.sta_patch_mean.lerp_(cell_mean, 1 - STA_PATCH_MEAN_MOMENTUM)
        else:
            cell_mean = self.sta_patch_mean
            if cell_mean.shape[0] == 0:  # never trained with centring: nothing to remove
                return image_patch_embeds
            if cell_mean.shape[0] != image_patch_embeds.shape[1]:
                raise ValueError(
                    f"`sta_patch_mean` was averaged over a grid of {cell_mean.shape[0]} cells in training, but these "
                    f"images give {image_patch_embeds.shape[1]} patches: evaluate at the training image size."
                )
        return F.normalize(image_patch_embeds - cell_mean.to(image_patch_embeds.dtype), dim=-1)

    def compute_sia_loss(
        self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, report_embeds: torch.Tensor | None
    ) -> torch.Tensor:
        """SIA on the global batch (gathered under torch.distributed)."""
        if self.config.sia_similarity_source == "text_embeds":
            report_embeds = text_embeds.detach()
        elif report_embeds is None:
            if self.config.sia_mode != "off":
                raise ValueError(
                    "`report_embeds` is required for SIA with `sia_similarity_source='report_embeds'`: pass the "
                    "precomputed report-similarity embeddings (batch_size, dim), or set "
                    "`config.sia_similarity_source='text_embeds'`, or `config.sia_mode='off'` for plain CLIP."
                )
            report_embeds = text_embeds.detach()  # unused: sia_mode="off" flags no pair

        # logits and report similarities in float32 also under bf16 autocast: the false negatives are thresholded on
        # these similarities
        with torch.autocast(device_type=image_embeds.device.type, enabled=False):
            image_embeds, text_embeds = upcast(image_embeds), upcast(text_embeds)
            report_embeds = F.normalize(report_embeds.float(), dim=-1)
            all_image_embeds, all_text_embeds, all_report_embeds, row_offset = gather_global_batch(
                image_embeds, text_embeds, report_embeds
            )
            logit_scale = upcast(self.logit_scale).exp().clamp(max=100)
            return sia_loss(
                logits_per_image=logit_scale * image_embeds @ all_text_embeds.t(),
                logits_per_text=logit_scale * text_embeds @ all_image_embeds.t(),
                report_similarity=report_embeds @ all_report_embeds.t(),
                threshold=self.config.sia_threshold,
                mode=self.config.sia_mode,
                soft_target=self.config.sia_soft_target,
                row_offset=row_offset,
            )

    def compute_sta(
        self, input_ids, attention_mask, text_token_embeds, token_features, image_patch_embeds, word_ids, return_loss,
        output_token_patch_weights=True,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """`(loss_sta, token_patch_weights)` with the STA options of the config; the image contrast sees the global
        batch's images under torch.distributed when a loss is asked. The masked map is an output only: a training
        step does not pay a pass over it (`None` unless `output_token_patch_weights`)."""
        config = self.config
        token_mask = self.sta_token_mask(input_ids, attention_mask)
        if config.sta_center_patches:
            image_patch_embeds = self.center_patch_embeds(image_patch_embeds)
        sta_tokens, sta_mask = text_token_embeds, token_mask
        by_words = config.sta_token_unit == "words"
        if by_words and word_ids is not None:
            word_ids = word_ids.masked_fill(~token_mask, -1)
            word_features, sta_mask = merge_content_words(token_features, word_ids)
            sta_tokens = F.normalize(word_features, dim=-1)
        elif by_words and return_loss:
            raise ValueError(
                "`config.sta_token_unit='words'` needs `word_ids` for the loss: build batches with "
                "`SistaDataCollator(content_word_ids=True)`."
            )
        all_image_patch_embeds, row_offset = None, 0
        if return_loss and config.sta_negatives != "tokens":
            all_image_patch_embeds, row_offset = gather_patch_embeds(image_patch_embeds)
        loss_sta, weights = sta_loss(
            sta_tokens,
            image_patch_embeds,
            sta_mask,
            sparsity_threshold=config.sta_sparsity_threshold,
            temperature=config.sta_temperature,
            negatives=config.sta_negatives,
            sparsity=config.sta_sparsity,
            top_k=config.sta_top_k,
            sparsity_temperature=config.sta_sparsity_temperature,
            all_image_patch_embeds=all_image_patch_embeds,
            row_offset=row_offset,
        )
        if by_words and word_ids is not None:
            # each token shows its word's map
            index = word_ids.clamp_min(0)[..., None].expand(-1, -1, weights.shape[-1])
            weights = weights.gather(1, index) * (word_ids >= 0)[..., None]
        elif by_words:
            loss_sta = None  # a per-token loss is not this model's STA
        return loss_sta, weights * token_mask[..., None] if output_token_patch_weights else None

    # -- forward ------------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        report_embeds: torch.FloatTensor | None = None,
        return_loss: bool | None = None,
        output_token_patch_weights: bool | None = None,
        word_ids: torch.LongTensor | None = None,
        training_step: int | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | SistaOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(text_batch_size, sequence_length)`): tokenised reports/prompts.
            pixel_values (`torch.FloatTensor` of shape `(image_batch_size, channels, height, width)`): images.
            attention_mask (`torch.Tensor` of shape `(text_batch_size, sequence_length)`, *optional*).
            token_type_ids (`torch.LongTensor` of shape `(text_batch_size, sequence_length)`, *optional*).
            report_embeds (`torch.FloatTensor` of shape `(batch_size, dim)`, *optional*): precomputed
                report-similarity embeddings `e_i` for SIA (see `config.sia_similarity_source`).
            return_loss (`bool`, *optional*): compute `loss`, `loss_sia` and `loss_sta` (needs paired batches).
            output_token_patch_weights (`bool`, *optional*): return the STA grounding map `token_patch_weights`
                (and `loss_sta`, which comes with it at no extra cost, also without `return_loss`).
            word_ids (`torch.LongTensor` of shape `(text_batch_size, sequence_length)`, *optional*): the content word
                of each token (-1: none), needed by `config.sta_token_unit="words"` for the loss
                ([`merge_content_words`]); without them that mode returns the per-token map and no `loss_sta`.
            training_step (`int`, *optional*): the 0-based optimizer step, needed in training mode by an STA warm
                start (`config.sta_start_step`, `config.sta_warmup_steps`).

        Image and text batch sizes may differ when neither a loss nor the grounding map is asked (zero-shot: images
        × prompts). Edge cases with a documented finite value: batch size 1 gives `loss_sia = 0` (no negative); a
        batch whose reports are all false negatives of each other gives `loss_sia = 0` in "eliminate" mode; a report
        with no token left for STA (only special tokens) is left out of `loss_sta`, which is 0 if no report has one.

        Bad inputs raise a `TypeError` or `ValueError` naming the argument ([`check_text_inputs`],
        [`check_report_embeds`]): ids beyond the text tower's vocabulary or positions, NaN or infinite `pixel_values`
        or `report_embeds`. Checks of values run only on CPU tensors outside `torch.compile`, so a training step on an
        accelerator has no host sync; a data collator can run the same checks on its CPU batches.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        backbone_kwargs = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
        backbone_kwargs = {key: value for key, value in backbone_kwargs.items() if value is not None}
        if position_ids is not None:
            kwargs["position_ids"] = position_ids

        vision_outputs, image_features, patch_features, patch_grid_size = self.encode_image(
            pixel_values, **backbone_kwargs
        )
        text_outputs, text_features, token_features = self.encode_text(
            input_ids, attention_mask, token_type_ids, **backbone_kwargs, **kwargs
        )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)

        image_embeds = F.normalize(image_features, dim=-1)
        text_embeds = F.normalize(text_features, dim=-1)
        image_patch_embeds = F.normalize(patch_features, dim=-1)
        text_token_embeds = F.normalize(token_features, dim=-1)

        # 0-dim, so that the logits keep the embeddings' dtype
        logit_scale = self.logit_scale.exp().clamp(max=100).squeeze(0)
        logits_per_text = logit_scale * text_embeds @ image_embeds.t()
        logits_per_image = logits_per_text.t()

        paired = return_loss or output_token_patch_weights
        if paired and image_embeds.shape[0] != text_embeds.shape[0]:
            raise ValueError(
                f"`pixel_values` and `input_ids` must hold the same number of samples for the loss or the grounding "
                f"map, got {image_embeds.shape[0]} images and {text_embeds.shape[0]} reports."
            )
        if report_embeds is not None:
            check_report_embeds(report_embeds, text_embeds.shape[0], training=self.training)

        loss = loss_sia = loss_sta = token_patch_weights = None
        sta_weight = self.sta_weight_at(training_step) if return_loss else self.config.sta_weight
        # a loss with weight 0 is not computed, so the ablations (and a warm start's first steps) cost what they should
        if output_token_patch_weights or (return_loss and sta_weight > 0):
            loss_sta, token_patch_weights = self.compute_sta(
                input_ids, attention_mask, text_token_embeds, token_features, image_patch_embeds, word_ids, return_loss,
                output_token_patch_weights,
            )
        if return_loss:
            if self.config.sia_weight > 0:
                loss_sia = self.compute_sia_loss(image_embeds, text_embeds, report_embeds)
            loss = total_loss(self.config.sia_weight, loss_sia, sta_weight, loss_sta)

        output = SistaOutput(
            loss=loss,
            loss_sia=loss_sia,
            loss_sta=loss_sta,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_token_embeds=text_token_embeds,
            image_patch_embeds=image_patch_embeds,
            token_patch_weights=token_patch_weights,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
            patch_grid_size=patch_grid_size,
        )
        return output if return_dict else output.to_tuple()


SistaModel.register_for_auto_class("AutoModel")


class ReshapeToParameter(ConversionOps):
    """A checkpoint tensor reshaped to the shape of the model's parameter, e.g. a 0-dim `logit_scale` to `(1,)`."""

    @torch.no_grad()
    def convert(self, input_dict, source_patterns, target_patterns, model=None, full_layer_name=None, **kwargs):
        tensors = next(iter(input_dict.values()))
        tensor = tensors[0] if isinstance(tensors, list) else tensors
        return {target_patterns[0]: tensor.reshape(model.get_parameter(full_layer_name).shape)}

    @property
    def reverse_op(self) -> ConversionOps:
        return self


# checkpoints saved before the logit scale had shape (1,) hold a 0-dim scalar: the one conversion, on the path every
# SISTA checkpoint loads through (`from_pretrained`, which the Trainers' resume and best-model reload use too)
register_checkpoint_conversion_mapping(
    SistaModel.__name__,
    [WeightConverter("logit_scale", "logit_scale", operations=[ReshapeToParameter()])],
    overwrite=True,
)


# ---------------------------------------------------------------------------------------------------------------------
# Task heads: losses and box utilities (small, pure, module-level)
# ---------------------------------------------------------------------------------------------------------------------


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
    r"""
    The loss of [`SistaForImageClassification`]: mean squared error (`"regression"`), cross-entropy
    (`"single_label_classification"`, `labels` are class indices) or binary cross-entropy with logits averaged over
    samples and classes (`"multi_label_classification"`, `labels` are multi-hot).
    """
    logits = upcast(logits)
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).squeeze(-1))
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits, labels.long())
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    raise ValueError(f"`problem_type` must be one of {PROBLEM_TYPES}, got {problem_type!r}.")


def soft_dice_loss(probabilities: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    r"""
    `1 - (2 sum(p g) + smooth) / (sum(p) + sum(g) + smooth)` per class over all pixels of the batch, averaged over
    classes. Pooling the batch keeps the loss defined for images without any lesion.

    Args:
        probabilities (`torch.Tensor` of shape `(num_classes, num_pixels)`): predicted foreground probabilities.
        targets (`torch.Tensor` of shape `(num_classes, num_pixels)`): 0/1 ground truth (0 for ignored pixels, whose
            probabilities must be zeroed by the caller too).
    """
    intersection = (probabilities * targets).sum(dim=1)
    dice = (2 * intersection + smooth) / (probabilities.sum(dim=1) + targets.sum(dim=1) + smooth)
    return (1 - dice).mean()


def segmentation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
) -> torch.Tensor:
    r"""
    `ce_weight * CE + dice_weight * Dice` over the pixels whose label is not `ignore_index`.

    One channel (`num_labels=1`): binary cross-entropy with logits and the Dice of `sigmoid(logits)` against labels in
    {0, 1}. Several channels: cross-entropy and the class-averaged Dice of `softmax(logits)` against one-hot labels.

    Args:
        logits (`torch.Tensor` of shape `(batch_size, num_labels, height, width)`).
        labels (`torch.LongTensor` of shape `(batch_size, height, width)`).
    """
    logits = upcast(logits)
    valid = labels != ignore_index
    safe_labels = labels.masked_fill(~valid, 0)
    if logits.shape[1] == 1:
        logits = logits[:, 0]
        targets = safe_labels.to(logits.dtype)
        cross_entropy = (F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * valid).sum()
        cross_entropy = cross_entropy / valid.sum().clamp_min(1)
        probabilities = (logits.sigmoid() * valid).reshape(1, -1)
        targets = (targets * valid).reshape(1, -1)
    else:
        # cross_entropy averages over no pixel as NaN; an all-ignored batch contributes 0 instead
        cross_entropy = (
            F.cross_entropy(logits, labels.long(), ignore_index=ignore_index) if valid.any() else logits.sum() * 0
        )
        num_classes = logits.shape[1]
        probabilities = (logits.softmax(dim=1) * valid[:, None]).transpose(0, 1).reshape(num_classes, -1)
        targets = (F.one_hot(safe_labels.long(), num_classes).permute(3, 0, 1, 2) * valid).reshape(num_classes, -1)
        targets = targets.to(logits.dtype)
    return ce_weight * cross_entropy + dice_weight * soft_dice_loss(probabilities, targets)


def focal_heatmap_loss(
    heatmap_logits: torch.Tensor, target_heatmap: torch.Tensor, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    r"""
    CenterNet's penalty-reduced pixel-wise focal loss, summed over cells and divided by the number of objects (the
    cells where the target is 1, at least 1):
    `-1/N sum [ (1-p)^a log p if y=1 else (1-y)^b p^a log(1-p) ]`.
    """
    heatmap_logits = upcast(heatmap_logits)
    log_probability = F.logsigmoid(heatmap_logits)
    log_complement = F.logsigmoid(-heatmap_logits)
    probability = heatmap_logits.sigmoid()
    is_center = target_heatmap.eq(1).to(heatmap_logits.dtype)
    positive = -((1 - probability) ** alpha) * log_probability * is_center
    negative = -((1 - target_heatmap) ** beta) * probability**alpha * log_complement * (1 - is_center)
    return (positive.sum() + negative.sum()) / is_center.sum().clamp_min(1)


def encode_detection_targets(
    labels: list[dict], num_classes: int, grid_height: int, grid_width: int, gaussian_scale: float = 0.54
) -> dict[str, torch.Tensor]:
    r"""
    CenterNet targets on a `grid_height` × `grid_width` output grid.

    Each box (normalised `(center_x, center_y, width, height)`, DETR convention) puts a peak of 1 on its class's
    heatmap at the cell holding its centre, spread by an elliptical Gaussian of standard deviations
    `gaussian_scale * box side / 6` (TTFNet), and regression targets at that cell: its size in cells and the sub-cell
    offset of its centre.

    Returns:
        dict with `heatmap` `(batch_size, num_classes, grid_height, grid_width)`, `sizes` and `offsets`
        `(batch_size, 2, grid_height, grid_width)` and `regression_mask` `(batch_size, grid_height, grid_width)`.
    """
    batch_size = len(labels)
    device = labels[0]["boxes"].device if batch_size else torch.device("cpu")
    heatmap = torch.zeros(batch_size, num_classes, grid_height, grid_width, device=device)
    sizes = torch.zeros(batch_size, 2, grid_height, grid_width, device=device)
    offsets = torch.zeros(batch_size, 2, grid_height, grid_width, device=device)
    regression_mask = torch.zeros(batch_size, grid_height, grid_width, dtype=torch.bool, device=device)
    rows = torch.arange(grid_height, device=device, dtype=torch.float32)[:, None]
    columns = torch.arange(grid_width, device=device, dtype=torch.float32)[None, :]
    scale = torch.tensor([grid_width, grid_height, grid_width, grid_height], device=device, dtype=torch.float32)
    for image_index, target in enumerate(labels):
        boxes = target["boxes"].float() * scale
        for (center_x, center_y, width, height), class_label in zip(boxes.tolist(), target["class_labels"].tolist()):
            column = min(max(int(center_x), 0), grid_width - 1)
            row = min(max(int(center_y), 0), grid_height - 1)
            sigma_x = max(gaussian_scale * width / 6, 1e-3)
            sigma_y = max(gaussian_scale * height / 6, 1e-3)
            gaussian = torch.exp(
                -((columns - column) ** 2) / (2 * sigma_x**2) - (rows - row) ** 2 / (2 * sigma_y**2)
            )
            heatmap[image_index, class_label] = torch.maximum(heatmap[image_index, class_label], gaussian)
            sizes[image_index, :, row, column] = torch.tensor([width, height], device=device)
            offsets[image_index, :, row, column] = torch.tensor([center_x - column, center_y - row], device=device)
            regression_mask[image_index, row, column] = True
    return {"heatmap": heatmap, "sizes": sizes, "offsets": offsets, "regression_mask": regression_mask}


# ---------------------------------------------------------------------------------------------------------------------
# Task heads: outputs
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class SistaObjectDetectionOutput(ModelOutput):
    r"""
    Output of [`SistaForObjectDetection`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            `loss_heatmap + detection_size_loss_weight * loss_size + detection_offset_loss_weight * loss_offset`.
        loss_dict (`dict[str, torch.FloatTensor]`, *optional*): the unweighted `loss_heatmap`, `loss_size`,
            `loss_offset`.
        heatmap_logits (`torch.FloatTensor` of shape `(batch_size, num_labels, grid_height, grid_width)`):
            Per-class centre heatmap logits on the output grid (the patch grid upsampled `detection_upsample_factor`
            times).
        box_sizes (`torch.FloatTensor` of shape `(batch_size, 2, grid_height, grid_width)`): predicted box width and
            height, in output cells.
        box_offsets (`torch.FloatTensor` of shape `(batch_size, 2, grid_height, grid_width)`): predicted sub-cell
            offset of the box centre.
        scores (`torch.FloatTensor` of shape `(batch_size, num_detections)`): scores of the decoded detections.
        pred_class_labels (`torch.LongTensor` of shape `(batch_size, num_detections)`): their classes.
        pred_boxes (`torch.FloatTensor` of shape `(batch_size, num_detections, 4)`): their boxes, normalised
            `(center_x, center_y, width, height)` (DETR convention). Use `post_process_object_detection` for
            thresholded, NMS-filtered absolute boxes.
        hidden_states, attentions: the vision backbone's, when asked.
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict | None = None
    heatmap_logits: torch.FloatTensor | None = None
    box_sizes: torch.FloatTensor | None = None
    box_offsets: torch.FloatTensor | None = None
    scores: torch.FloatTensor | None = None
    pred_class_labels: torch.LongTensor | None = None
    pred_boxes: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Task heads: models
# ---------------------------------------------------------------------------------------------------------------------


class SistaVisionHeadModel(SistaPreTrainedModel):
    r"""
    Base of the task heads: SISTA's vision backbone alone, under the attribute name it has in [`SistaModel`]
    (`vision_model`, as `CLIPForImageClassification` does), so a pre-trained SISTA checkpoint loads into it with
    `from_pretrained` key for key; the text tower, the projections and the logit scale of the checkpoint are left
    out. With `config.freeze_encoder` the backbone gets no gradient and stays in eval mode.
    """

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _keys_to_ignore_on_load_unexpected = [
        r"^text_model\.",
        r"^text_projection\.",
        r"^visual_projection\.",
        r"^logit_scale$",
    ]

    def __init__(self, config: SistaConfig):
        super().__init__(config)
        self.vision_model = backbone_from_config(config.vision_config, keep_pooler=config.vision_pooling == "pooler")
        self.vision_model.config = self.config.vision_config
        self.vision_feature_size = vision_feature_size(self.vision_model)
        if config.freeze_encoder:
            self.vision_model.requires_grad_(False)
        freeze_mask_token(self.vision_model)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        # loading replaces the parameters that `__init__` froze
        model.vision_model.requires_grad_(not model.config.freeze_encoder)
        freeze_mask_token(model.vision_model)
        return loaded

    def save_pretrained(self, save_directory, *args, **kwargs):
        # a config inherited from a pre-trained SistaModel maps AutoModel to SistaModel, which would load this
        # checkpoint (no text tower) with a random text tower
        auto_map = getattr(self.config, "auto_map", None) or {}
        self.config.auto_map = {
            name: target
            for name, target in auto_map.items()
            if name not in ("AutoModel", "AutoModelForZeroShotImageClassification")
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_encoder:
            self.vision_model.eval()  # a frozen encoder is a fixed feature extractor: no dropout, fixed norms
        return self

    def encode(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
    ) -> tuple[ModelOutput, torch.Tensor, torch.Tensor]:
        r"""
        Returns `(vision_outputs, pooled, patch_grid)`: the backbone output, the pooled feature `(batch_size,
        vision_feature_size)` (per `config.vision_pooling`) and the patch features as a map `(batch_size,
        vision_feature_size, grid_height, grid_width)`, the grid the backbone's output gives.
        """
        self._check_pixel_values(pixel_values)
        backbone_kwargs = {
            "output_attentions": output_attentions,
            "output_hidden_states": output_hidden_states,
            "interpolate_pos_encoding": interpolate_pos_encoding,
        }
        backbone_kwargs = {key: value for key, value in backbone_kwargs.items() if value is not None}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_encoder):
            vision_outputs = self.vision_model(pixel_values=pixel_values, return_dict=True, **backbone_kwargs)
        pooled, patch_states, (grid_height, grid_width) = split_vision_states(
            vision_outputs, pixel_values, self.config.vision_config, self.config.vision_pooling
        )
        check_vision_feature_size(patch_states, self.vision_feature_size, self.config.vision_config)
        patch_grid = patch_states.transpose(1, 2).reshape(patch_states.shape[0], -1, grid_height, grid_width)
        return vision_outputs, pooled, patch_grid


def _conv_norm_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: fine-tuning batches of a few chest X-rays are too small for batch statistics
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.GroupNorm(math.gcd(32, out_channels), out_channels),
        nn.ReLU(inplace=True),
    )


class SistaForImageClassification(SistaVisionHeadModel):
    r"""
    SISTA's vision encoder with a linear classifier on the pooled image feature (`config.vision_pooling`): a linear
    probe with `config.freeze_encoder=True`, full fine-tuning otherwise. `config.problem_type` selects the loss:
    `"multi_label_classification"` (BCE, `labels` multi-hot `(batch_size, num_labels)`),
    `"single_label_classification"` (CE, `labels` class indices `(batch_size,)`) or `"regression"` (MSE); `None`
    infers it from the labels as transformers does.

    Example:

    ```python
    >>> from modeling_sista import SistaForImageClassification

    >>> model = SistaForImageClassification.from_pretrained(
    ...     "path/to/sista", num_labels=11, problem_type="multi_label_classification", freeze_encoder=True
    ... )
    >>> logits = model(pixel_values).logits  # (batch_size, 11)
    ```"""

    def __init__(self, config: SistaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(self.vision_feature_size, config.num_labels)
        self.post_init()

    def _problem_type(self, labels: torch.Tensor) -> str:
        if self.config.problem_type is not None:
            return self.config.problem_type
        if self.num_labels == 1:
            return "regression"
        if labels.dtype in (torch.long, torch.int):
            return "single_label_classification"
        return "multi_label_classification"

    @property
    def _inferred_problem_type_hint(self) -> str:
        # with `problem_type=None` the loss follows the labels' dtype, so a wrong dtype reads as the wrong problem
        if self.config.problem_type is not None:
            return ""
        return (
            " (`config.problem_type` is None, so it was inferred from the labels: integer labels are class indices, "
            "float labels multi-hot; set `problem_type` to say which)"
        )

    def _check_labels(self, labels: torch.Tensor, problem_type: str, batch_size: int):
        if problem_type == "single_label_classification":
            if labels.shape != (batch_size,) or labels.is_floating_point():
                raise ValueError(
                    f"single-label `labels` must be class indices of shape ({batch_size},), got "
                    f"{labels.dtype} of shape {tuple(labels.shape)}{self._inferred_problem_type_hint}."
                )
            check_range = labels.numel() and values_are_checkable(labels, self.training)
            if check_range and (labels.min() < 0 or labels.max() >= self.num_labels):
                raise ValueError(
                    f"`labels` must lie in [0, {self.num_labels - 1}] (num_labels={self.num_labels}), got values "
                    f"from {labels.min().item()} to {labels.max().item()}."
                )
        elif problem_type == "multi_label_classification":
            if labels.shape != (batch_size, self.num_labels):
                raise ValueError(
                    f"multi-label `labels` must be multi-hot of shape ({batch_size}, {self.num_labels}), got "
                    f"{tuple(labels.shape)}{self._inferred_problem_type_hint}."
                )
            check_range = labels.numel() and values_are_checkable(labels, self.training)
            if check_range and (labels.min() < 0 or labels.max() > 1):
                raise ValueError(
                    f"multi-label `labels` must lie in [0, 1], got values from {labels.min().item()} to "
                    f"{labels.max().item()}."
                )
        elif problem_type == "regression":
            expected_shapes = {(batch_size, self.num_labels)} | ({(batch_size,)} if self.num_labels == 1 else set())
            if tuple(labels.shape) not in expected_shapes:
                raise ValueError(
                    f"regression `labels` must have shape {' or '.join(map(str, sorted(expected_shapes)))}, got "
                    f"{tuple(labels.shape)}."
                )

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
    ) -> tuple | ImageClassifierOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, channels, height, width)`): images.
            labels (`torch.Tensor`, *optional*): `(batch_size,)` class indices (single-label), `(batch_size,
                num_labels)` multi-hot (multi-label) or targets (regression).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        vision_outputs, pooled, _ = self.encode(
            pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding
        )
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            check_label_tensor(labels, training=self.training)
            problem_type = self._problem_type(labels)
            self._check_labels(labels, problem_type, logits.shape[0])
            loss = classification_loss(logits, labels, problem_type)
        output = ImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=vision_outputs.get("hidden_states"),
            attentions=vision_outputs.get("attentions"),
        )
        return output if return_dict else output.to_tuple()


class SistaMaskPredictor(nn.Conv2d):
    """The decoder's 1×1 classifier; its own class so that `_init_weights` can give a binary head the focal prior."""


class SistaSegmentationDecoder(nn.Module):
    r"""
    Progressive-upsampling decoder on the patch grid (SETR-PUP style): `log2(output_stride)` stages (2 when the
    backbone's stride is unknown) of 3×3 conv + GroupNorm + ReLU + 2× bilinear upsampling, halving the channels from
    `decoder_hidden_size` (at least 32), then a 1×1 classifier and a last resize to the exact input size.
    """

    def __init__(self, in_channels: int, hidden_size: int, num_labels: int, output_stride: int | None):
        super().__init__()
        num_stages = max(math.ceil(math.log2(output_stride)), 1) if output_stride else 2
        channels = [in_channels] + [max(hidden_size // 2**stage, 32) for stage in range(num_stages)]
        self.stages = nn.ModuleList(_conv_norm_relu(channels[i], channels[i + 1]) for i in range(num_stages))
        self.classifier = SistaMaskPredictor(channels[-1], num_labels, kernel_size=1)

    def forward(self, patch_grid: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
        hidden = patch_grid
        for stage in self.stages:
            hidden = F.interpolate(stage(hidden), scale_factor=2, mode="bilinear", align_corners=False)
        logits = self.classifier(hidden)
        if logits.shape[-2:] != tuple(output_size):
            logits = F.interpolate(logits, size=output_size, mode="bilinear", align_corners=False)
        return logits


def vision_stage_layout(vision_config) -> list[tuple[int, int]] | None:
    r"""
    `(stride, channels)` of each feature map a hierarchical vision tower returns with `output_hidden_states=True`, in
    its order (Swin's `reshaped_hidden_states`): the stem, then every stage. `None` for a tower without stages (a
    plain ViT) or one whose layout SISTA does not know.

    ResNet: the stem at stride 4 (`embedding_size` channels), stage `i` at `4 · s · 2^i` (`s` = 2 with
    `downsample_in_first_stage`) with `hidden_sizes[i]`. ConvNeXt: the stem at `patch_size` with `hidden_sizes[0]`,
    stage `i` at `patch_size · 2^i`. Swin: the stem at `patch_size` with `embed_dim`, stage `i` after its patch merging
    (`embed_dim · 2^(i+1)` at `patch_size · 2^(i+1)`; the last stage merges nothing), or before it with
    `output_hidden_states_before_downsampling`.
    """
    model_type = getattr(vision_config, "model_type", None)
    if model_type not in STAGED_VISION_BACKBONES:
        return None
    if model_type == "resnet":
        first = 2 if vision_config.downsample_in_first_stage else 1
        return [(4, vision_config.embedding_size)] + [
            (4 * first * 2**index, width) for index, width in enumerate(vision_config.hidden_sizes)
        ]
    if model_type == "convnext":
        patch = vision_config.patch_size
        return [(patch, vision_config.hidden_sizes[0])] + [
            (patch * 2**index, width) for index, width in enumerate(vision_config.hidden_sizes)
        ]
    patch, width, num_stages = vision_config.patch_size, vision_config.embed_dim, len(vision_config.depths)
    before = getattr(vision_config, "output_hidden_states_before_downsampling", False)
    return [(patch, width)] + [
        (patch * 2**level, width * 2**level)
        for level in (range(num_stages) if before else [min(i + 1, num_stages - 1) for i in range(num_stages)])
    ]


def unet_skip_layout(vision_config) -> list[tuple[int, int]]:
    r"""
    The skip connections of [`SistaUNetDecoder`]: for every stride finer than the tower's last one, `(stride,
    channels)` of the deepest feature map at that stride (the last one the tower returns there), coarse to fine.
    """
    layout = vision_stage_layout(vision_config)
    if layout is None:
        raise ValueError(
            f"The vision backbone {getattr(vision_config, 'model_type', None)!r} has no stages SISTA knows: the U-Net "
            f"decoder needs one of {STAGED_VISION_BACKBONES}."
        )
    deepest = dict(layout)  # a later map at the same stride replaces an earlier one
    last_stride = layout[-1][0]
    return sorted(((stride, width) for stride, width in deepest.items() if stride < last_stride), reverse=True)


def select_skip_maps(vision_outputs: ModelOutput, num_skips: int, vision_config) -> list[torch.Tensor]:
    r"""
    The feature maps of [`unet_skip_layout`] from a backbone's output (run with `output_hidden_states=True`): the
    deepest map of every resolution finer than the last one, coarse to fine.
    """
    hidden_states = vision_outputs.get("reshaped_hidden_states") or vision_outputs.get("hidden_states")
    maps = [state for state in hidden_states or () if state.dim() == 4]
    if not maps:
        raise ValueError(
            f"The vision backbone {vision_config.model_type!r} returned no feature maps in its hidden states: the "
            "U-Net decoder needs them (`output_hidden_states=True`)."
        )
    deepest = {tuple(state.shape[-2:]): state for state in maps}  # later maps replace earlier ones of equal size
    last = tuple(maps[-1].shape[-2:])
    finer = sorted((size for size in deepest if size[0] * size[1] > last[0] * last[1]), key=lambda size: size[0] * size[1])
    if len(finer) != num_skips:
        raise ValueError(
            f"The vision backbone {vision_config.model_type!r} returned feature maps of sizes {sorted(deepest)}: "
            f"{len(finer)} finer than its last map {last}, but its config gives {num_skips} (see `unet_skip_layout`)."
        )
    return [deepest[size] for size in finer]


class SistaUNetDecoder(nn.Module):
    r"""
    U-Net decoder over a hierarchical tower's stages, as in segmentation_models_pytorch's `Unet` (GLoRIA's and MGCA's
    frozen-encoder segmentation protocol): from the last feature map, each block upsamples 2× (to the size of the
    next finer map), concatenates that stage's map and applies two 3×3 conv + GroupNorm + ReLU; blocks without a skip
    continue to stride 1; then a 1×1 classifier and a last resize to the exact input size. Block `i` has
    `max(decoder_hidden_size / 2^i, 16)` channels.
    """

    def __init__(self, in_channels: int, skip_layout: list[tuple[int, int]], hidden_size: int, num_labels: int):
        super().__init__()
        finest_stride = skip_layout[-1][0] if skip_layout else 2
        num_blocks = len(skip_layout) + max(math.ceil(math.log2(finest_stride)), 0)
        self.skip_channels = [width for _, width in skip_layout]
        self.blocks = nn.ModuleList()
        channels = in_channels
        for index in range(num_blocks):
            skip = self.skip_channels[index] if index < len(self.skip_channels) else 0
            width = max(hidden_size // 2**index, 16)
            self.blocks.append(nn.Sequential(_conv_norm_relu(channels + skip, width), _conv_norm_relu(width, width)))
            channels = width
        self.classifier = SistaMaskPredictor(channels, num_labels, kernel_size=1)

    def forward(self, patch_grid: torch.Tensor, skips: list[torch.Tensor], output_size: tuple[int, int]) -> torch.Tensor:
        hidden = patch_grid
        for index, block in enumerate(self.blocks):
            if index < len(skips):
                hidden = F.interpolate(hidden, size=skips[index].shape[-2:], mode="nearest")
                hidden = torch.cat([hidden, skips[index]], dim=1)
            else:
                hidden = F.interpolate(hidden, scale_factor=2, mode="nearest")
            hidden = block(hidden)
        logits = self.classifier(hidden)
        if logits.shape[-2:] != tuple(output_size):
            logits = F.interpolate(logits, size=output_size, mode="bilinear", align_corners=False)
        return logits


def segmentation_decoder_type(config: SistaConfig) -> str:
    """`"unet"` or `"setr_pup"`: `config.segmentation_decoder` with `"auto"` resolved by the vision tower."""
    if config.segmentation_decoder != "auto":
        return config.segmentation_decoder
    return "unet" if vision_stage_layout(config.vision_config) is not None else "setr_pup"


class SistaForSemanticSegmentation(SistaVisionHeadModel):
    r"""
    SISTA's vision encoder with a decoder giving mask logits at the input resolution: a U-Net over the stages of a
    hierarchical tower ([`SistaUNetDecoder`]) or a light progressive-upsampling decoder on the patch grid
    ([`SistaSegmentationDecoder`]), per `config.segmentation_decoder`. `num_labels=1` is binary segmentation (BCE + Dice on the sigmoid,
    `labels` in {0, 1}); `num_labels>1` is multi-class (CE + Dice on the softmax, `labels` class indices). Pixels
    labelled `config.semantic_loss_ignore_index` are ignored.

    Example:

    ```python
    >>> from modeling_sista import SistaForSemanticSegmentation

    >>> model = SistaForSemanticSegmentation.from_pretrained("path/to/sista", num_labels=1)
    >>> outputs = model(pixel_values, labels=masks)  # masks: (batch_size, height, width) in {0, 1}
    >>> predicted_masks = outputs.logits[:, 0] > 0
    ```"""

    def __init__(self, config: SistaConfig):
        super().__init__(config)
        self.decoder_type = segmentation_decoder_type(config)
        if self.decoder_type == "unet":
            self.decoder = SistaUNetDecoder(
                self.vision_feature_size,
                unet_skip_layout(config.vision_config),
                config.decoder_hidden_size,
                config.num_labels,
            )
        else:
            self.decoder = SistaSegmentationDecoder(
                self.vision_feature_size,
                config.decoder_hidden_size,
                config.num_labels,
                vision_output_stride(config.vision_config),
            )
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, loading_info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
        stale = [key for key in loading_info["unexpected_keys"] if key.startswith("decoder.")]
        if stale:
            raise ValueError(
                f"{pretrained_model_name_or_path!s} holds decoder weights of another layout (e.g. {stale[:2]}) than "
                f"the {model.decoder_type!r} decoder its config builds: a head saved with the other "
                "`segmentation_decoder` (pass segmentation_decoder='setr_pup' or 'unet' to load it)."
            )
        return (model, loading_info) if output_loading_info else model

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, SistaMaskPredictor) and module.bias is not None and module.out_channels == 1:
            # a binary head starts at lesion probability 0.01: with 0.5 everywhere, the first steps' BCE on the many
            # background pixels can push the decoder to an all-background output whose Dice gradient has vanished
            init.constant_(module.bias, FOCAL_PRIOR_BIAS)

    def _check_labels(self, labels: torch.Tensor, logits: torch.Tensor):
        check_label_tensor(labels, training=self.training)
        expected_shape = (logits.shape[0], *logits.shape[-2:])
        if labels.shape != expected_shape or labels.is_floating_point():
            raise ValueError(
                f"`labels` must be an integer mask of shape {expected_shape} (batch_size, height, width of "
                f"`pixel_values`), got {labels.dtype} of shape {tuple(labels.shape)}."
            )
        num_classes = max(self.config.num_labels, 2)  # one logit channel still means classes {0, 1}
        if not values_are_checkable(labels, self.training):
            return
        valid = labels[labels != self.config.semantic_loss_ignore_index]
        if valid.numel() and (valid.min() < 0 or valid.max() >= num_classes):
            raise ValueError(
                f"`labels` must lie in [0, {num_classes - 1}] (or be {self.config.semantic_loss_ignore_index} to "
                f"ignore a pixel), got values from {valid.min().item()} to {valid.max().item()}; binary masks stored "
                "as 0/255 must be divided by 255."
            )

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
    ) -> tuple | SemanticSegmenterOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, channels, height, width)`): images.
            labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*): ground-truth masks.

        Returns:
            [`SemanticSegmenterOutput`] with `logits` of shape `(batch_size, num_labels, height, width)`, the input
            resolution (transformers' SegFormer returns a quarter; here no resize is needed before the metric).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_size = tuple(pixel_values.shape[-2:]) if pixel_values is not None else None
        if self.decoder_type == "unet":
            vision_outputs, _, patch_grid = self.encode(pixel_values, output_attentions, True, interpolate_pos_encoding)
            skips = select_skip_maps(vision_outputs, len(self.decoder.skip_channels), self.config.vision_config)
            logits = self.decoder(patch_grid, skips, output_size)
            if not (output_hidden_states or self.config.output_hidden_states):
                vision_outputs["hidden_states"] = None  # asked for by the decoder, not by the caller
        else:
            vision_outputs, _, patch_grid = self.encode(
                pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding
            )
            logits = self.decoder(patch_grid, output_size)
        loss = None
        if labels is not None:
            self._check_labels(labels, logits)
            loss = segmentation_loss(
                logits,
                labels,
                ignore_index=self.config.semantic_loss_ignore_index,
                dice_weight=self.config.segmentation_dice_weight,
                ce_weight=self.config.segmentation_ce_weight,
            )
        output = SemanticSegmenterOutput(
            loss=loss,
            logits=logits,
            hidden_states=vision_outputs.get("hidden_states"),
            attentions=vision_outputs.get("attentions"),
        )
        return output if return_dict else output.to_tuple()


class SistaHeatmapPredictor(nn.Conv2d):
    """The last 1×1 conv of the heatmap branch; its own class so that `_init_weights` can give it the focal prior."""


class SistaDetectionHead(nn.Module):
    r"""
    CenterNet-style dense head: a 3×3 conv on the patch grid, `log2(detection_upsample_factor)` stages of 2×
    upsampling + 3×3 conv, then three branches (class heatmap, box size, centre offset) of 3×3 conv + ReLU + 1×1
    conv.
    """

    def __init__(self, in_channels: int, hidden_size: int, num_labels: int, upsample_factor: int):
        super().__init__()
        self.stem = _conv_norm_relu(in_channels, hidden_size)
        self.upsample_stages = nn.ModuleList(
            _conv_norm_relu(hidden_size, hidden_size) for _ in range(int(math.log2(upsample_factor)))
        )

        def branch(out_channels, output_class=nn.Conv2d):
            return nn.Sequential(
                nn.Conv2d(hidden_size, hidden_size, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                output_class(hidden_size, out_channels, kernel_size=1),
            )

        self.heatmap = branch(num_labels, SistaHeatmapPredictor)
        self.size = branch(2)
        self.offset = branch(2)

    def forward(self, patch_grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.stem(patch_grid)
        for stage in self.upsample_stages:
            hidden = stage(F.interpolate(hidden, scale_factor=2, mode="bilinear", align_corners=False))
        return self.heatmap(hidden), self.size(hidden), self.offset(hidden)


class SistaForObjectDetection(SistaVisionHeadModel):
    r"""
    SISTA's vision encoder with an anchor-free CenterNet head on the patch grid, upsampled
    `config.detection_upsample_factor` times: per-class centre heatmaps (focal loss), box sizes and centre offsets
    (L1). `config.num_labels` is the number of object classes (no background class).

    `labels` follow the DETR convention of transformers: a list (one per image) of dicts with `class_labels`
    (`torch.LongTensor` of shape `(num_boxes,)`) and `boxes` (`torch.FloatTensor` of shape `(num_boxes, 4)`,
    normalised `(center_x, center_y, width, height)` in [0, 1]). `post_process_object_detection` turns the outputs
    into transformers' detection results (absolute `(x_min, y_min, x_max, y_max)` boxes).

    Example:

    ```python
    >>> from modeling_sista import SistaForObjectDetection

    >>> model = SistaForObjectDetection.from_pretrained("path/to/sista", num_labels=5)
    >>> outputs = model(pixel_values)
    >>> results = model.post_process_object_detection(outputs, threshold=0.3, target_sizes=[(1024, 1024)])
    >>> results[0]["scores"], results[0]["labels"], results[0]["boxes"]
    ```"""

    def __init__(self, config: SistaConfig):
        super().__init__(config)
        self.detection_head = SistaDetectionHead(
            self.vision_feature_size,
            config.decoder_hidden_size,
            config.num_labels,
            config.detection_upsample_factor,
        )
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, SistaHeatmapPredictor) and module.bias is not None:
            # focal-loss prior: every cell starts at probability 0.01, so the many negatives do not swamp training
            init.constant_(module.bias, FOCAL_PRIOR_BIAS)

    def _check_labels(self, labels, batch_size: int):
        if not isinstance(labels, (list, tuple)) or len(labels) != batch_size:
            raise ValueError(
                f"`labels` must be a list of {batch_size} dicts (one per image) with `class_labels` and `boxes`, got "
                f"{type(labels).__name__}{f' of length {len(labels)}' if isinstance(labels, (list, tuple)) else ''}."
            )
        for index, target in enumerate(labels):
            if not isinstance(target, dict) or not {"class_labels", "boxes"} <= set(target):
                raise ValueError(f"`labels[{index}]` must be a dict with `class_labels` and `boxes`, got {target!r}.")
            class_labels, boxes = target["class_labels"], target["boxes"]
            for name, value in (("class_labels", class_labels), ("boxes", boxes)):
                if not torch.is_tensor(value):
                    raise TypeError(f"`labels[{index}]['{name}']` must be a tensor, got {type(value).__name__}.")
            if class_labels.is_floating_point() or class_labels.is_complex() or class_labels.dtype == torch.bool:
                raise TypeError(
                    f"`labels[{index}]['class_labels']` must be an integer tensor of class indices, got dtype "
                    f"{class_labels.dtype}."
                )
            if boxes.dim() != 2 or boxes.shape[1] != 4 or class_labels.shape != (boxes.shape[0],):
                raise ValueError(
                    f"`labels[{index}]` must hold `boxes` of shape (num_boxes, 4) and `class_labels` of shape "
                    f"(num_boxes,), got {tuple(boxes.shape)} and {tuple(class_labels.shape)}."
                )
            if not values_are_checkable(boxes, self.training):
                continue
            if class_labels.numel() and (class_labels.min() < 0 or class_labels.max() >= self.config.num_labels):
                raise ValueError(
                    f"`labels[{index}]['class_labels']` must lie in [0, {self.config.num_labels - 1}] "
                    f"(num_labels={self.config.num_labels}), got {class_labels.tolist()}."
                )
            # every comparison with NaN is false, so finiteness is checked first
            if boxes.numel() and (
                not torch.isfinite(boxes).all()
                or boxes.min() < 0
                or boxes[:, :2].max() > 1
                or (boxes[:, 2:] <= 0).any()
                or boxes[:, 2:].max() > 1
            ):
                raise ValueError(
                    f"`labels[{index}]['boxes']` must be finite and normalised (center_x, center_y, width, height) in "
                    f"[0, 1] with positive sizes (DETR convention), got {boxes.tolist()}."
                )

    def compute_loss(self, heatmap_logits, box_sizes, box_offsets, labels) -> tuple[torch.Tensor, dict]:
        """Focal heatmap loss + weighted L1 on sizes and offsets at the object centres, each per object."""
        targets = encode_detection_targets(labels, self.config.num_labels, *heatmap_logits.shape[-2:])
        mask = targets["regression_mask"][:, None].to(box_sizes.dtype)
        num_objects = targets["regression_mask"].sum().clamp_min(1)
        loss_dict = {
            "loss_heatmap": focal_heatmap_loss(heatmap_logits, targets["heatmap"]),
            "loss_size": (F.l1_loss(upcast(box_sizes), targets["sizes"], reduction="none") * mask).sum() / num_objects,
            "loss_offset": (F.l1_loss(upcast(box_offsets), targets["offsets"], reduction="none") * mask).sum()
            / num_objects,
        }
        loss = (
            loss_dict["loss_heatmap"]
            + self.config.detection_size_loss_weight * loss_dict["loss_size"]
            + self.config.detection_offset_loss_weight * loss_dict["loss_offset"]
        )
        return loss, loss_dict

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        labels: list[dict] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
    ) -> tuple | SistaObjectDetectionOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, channels, height, width)`): images.
            labels (`list[dict]`, *optional*): per image, `class_labels` `(num_boxes,)` and `boxes` `(num_boxes, 4)`
                normalised `(center_x, center_y, width, height)`; an image without objects has empty tensors.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        vision_outputs, _, patch_grid = self.encode(
            pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding
        )
        heatmap_logits, box_sizes, box_offsets = self.detection_head(patch_grid)
        loss = loss_dict = None
        if labels is not None:
            self._check_labels(labels, pixel_values.shape[0])
            loss, loss_dict = self.compute_loss(heatmap_logits, box_sizes, box_offsets, labels)
        scores, pred_class_labels, pred_boxes = decode_detections(
            heatmap_logits, box_sizes, box_offsets, self.config.detection_max_detections
        )
        output = SistaObjectDetectionOutput(
            loss=loss,
            loss_dict=loss_dict,
            heatmap_logits=heatmap_logits,
            box_sizes=box_sizes,
            box_offsets=box_offsets,
            scores=scores,
            pred_class_labels=pred_class_labels,
            pred_boxes=pred_boxes,
            hidden_states=vision_outputs.get("hidden_states"),
            attentions=vision_outputs.get("attentions"),
        )
        return output if return_dict else output.to_tuple()

    def post_process_object_detection(
        self,
        outputs: SistaObjectDetectionOutput,
        threshold: float = 0.5,
        target_sizes: torch.Tensor | list[tuple[int, int]] | None = None,
        nms_iou_threshold: float | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        r"""
        Thresholds, rescales and NMS-filters the decoded detections in the frame the model saw. For boxes in the
        original images' pixels (undoing the processor's pad or crop of a non-square image) use
        [`SistaImageProcessor.post_process_object_detection`], which `pipeline("object-detection")` calls.

        Args:
            outputs ([`SistaObjectDetectionOutput`]): the model's output.
            threshold (`float`, *optional*, defaults to 0.5): minimum score of a kept box.
            target_sizes (`torch.Tensor` of shape `(batch_size, 2)` or `list[tuple[int, int]]`, *optional*):
                `(height, width)` the normalised boxes are scaled to (the processed image's size gives its pixels);
                boxes stay normalised to [0, 1] when `None`.
            nms_iou_threshold (`float`, *optional*): defaults to `config.detection_nms_iou_threshold`; 1 disables NMS.

        Returns:
            `list[dict]`, one per image, with `scores` `(num_kept,)`, `labels` `(num_kept,)` and `boxes` `(num_kept,
            4)` as absolute `(x_min, y_min, x_max, y_max)`, by decreasing score.
        """
        nms_iou_threshold = self.config.detection_nms_iou_threshold if nms_iou_threshold is None else nms_iou_threshold

        def scale(index: int, boxes: torch.Tensor) -> torch.Tensor:
            height, width = (float(size) for size in target_sizes[index])
            return boxes * boxes.new_tensor([width, height, width, height])

        return post_process_detections(
            outputs, threshold, nms_iou_threshold, target_sizes, None if target_sizes is None else scale
        )


SistaForImageClassification.register_for_auto_class("AutoModelForImageClassification")
SistaForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
SistaForObjectDetection.register_for_auto_class("AutoModelForObjectDetection")

__all__ = [
    "SistaForImageClassification",
    "SistaForObjectDetection",
    "SistaForSemanticSegmentation",
    "SistaModel",
    "SistaObjectDetectionOutput",
    "SistaOutput",
    "SistaPreTrainedModel",
    "SistaVisionHeadModel",
    "batched_nms",
    "box_iou",
    "center_to_corners",
    "check_label_tensor",
    "check_local_checkpoint",
    "check_report_embeds",
    "check_text_inputs",
    "classification_loss",
    "decode_detections",
    "encode_detection_targets",
    "false_negative_mask",
    "focal_heatmap_loss",
    "gather_global_batch",
    "pooling_layer_kwargs",
    "post_process_detections",
    "segmentation_loss",
    "semantic_aware_contrastive_loss",
    "sia_loss",
    "soft_dice_loss",
    "sparse_token_patch_weights",
    "sta_loss",
    "text_max_positions",
    "total_loss",
    "values_are_checkable",
]
