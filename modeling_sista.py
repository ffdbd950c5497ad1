# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""PyTorch SISTA model: image-report pre-training with semantic-aware instance alignment (SIA) and sparse token
alignment (STA).

Read top to bottom: the loss functions (small, pure, module-level), the distributed gather, the output dataclass,
then the models.
"""

import inspect
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import MODEL_MAPPING, AutoConfig, AutoModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput, logging


try:
    from .configuration_sista import SistaConfig
except ImportError:  # a flat checkout imported without a package
    from configuration_sista import SistaConfig


logger = logging.get_logger(__name__)


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

    With no false negatives both modes equal the cross-entropy of CLIP.
    """
    logits = upcast(logits)
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
    raise ValueError(f"`mode` must be 'eliminate' or 'soft', got {mode!r}.")


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
    """
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
    token_patch_similarity: torch.Tensor, sparsity_threshold: float, eps: float = 1e-6
) -> torch.Tensor:
    r"""
    Sparse word-to-patch alignment weights `A` (the grounding map), per token row:

    1. min-max normalise over patches: `S^ = (S - min_k S) / (max_k S - min_k S + eps)`;
    2. sparsify: `S~ = S^ if S^ >= sparsity_threshold else 0`;
    3. L1-normalise: `A = S~ / sum_k S~`.

    Args:
        token_patch_similarity (`torch.Tensor` of shape `(batch_size, num_tokens, num_patches)`): `<w_ij, p_ik>`.
        sparsity_threshold (`float`): in [0, 1]; the patch of maximal similarity is always kept.

    Returns:
        `torch.Tensor` of shape `(batch_size, num_tokens, num_patches)`; rows sum to 1 (or 0 for a row whose
        similarities are all equal, which has no patch to prefer).
    """
    row_min = token_patch_similarity.amin(dim=-1, keepdim=True)
    row_max = token_patch_similarity.amax(dim=-1, keepdim=True)
    normalized = (token_patch_similarity - row_min) / (row_max - row_min + eps)
    sparse = normalized * (normalized >= sparsity_threshold)
    return sparse / sparse.sum(dim=-1, keepdim=True).clamp_min(eps)


def sta_loss(
    text_token_embeds: torch.Tensor,
    image_patch_embeds: torch.Tensor,
    token_mask: torch.BoolTensor,
    sparsity_threshold: float | None = None,
    temperature: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    Sparse token alignment, vectorised over the batch.

    For sample i, the language-grouped vision embedding of token j is `c_ij = normalise(sum_k A[j,k] p_ik)`, with
    `A = sparse_token_patch_weights(<w_ij, p_ik>)`. Inside each report, token j's positive is `c_ij` and its
    negatives are the `c_ij'` of the other valid tokens; the loss is symmetric (token→group and group→token) with
    temperature `temperature`, averaged over the valid tokens of a sample, then over the samples that have any.

    Args:
        text_token_embeds (`torch.Tensor` of shape `(batch_size, num_tokens, dim)`): L2-normalised `w_ij`.
        image_patch_embeds (`torch.Tensor` of shape `(batch_size, num_patches, dim)`): L2-normalised `p_ik`.
        token_mask (`torch.BoolTensor` of shape `(batch_size, num_tokens)`): the tokens to align (no padding, no
            special tokens).
        sparsity_threshold (`float`, *optional*): defaults to `1 / num_patches`.

    Returns:
        `(loss, weights)`: the scalar loss (0 when no sample has a valid token) and `A` of shape
        `(batch_size, num_tokens, num_patches)`.
    """
    text_token_embeds, image_patch_embeds = upcast(text_token_embeds), upcast(image_patch_embeds)
    if sparsity_threshold is None:
        sparsity_threshold = 1.0 / image_patch_embeds.shape[1]

    token_patch_similarity = torch.einsum("bld,bpd->blp", text_token_embeds, image_patch_embeds)
    weights = sparse_token_patch_weights(token_patch_similarity, sparsity_threshold)
    language_grouped_patch_embeds = F.normalize(torch.einsum("blp,bpd->bld", weights, image_patch_embeds), dim=-1)

    token_group_logits = torch.einsum("bld,bmd->blm", text_token_embeds, language_grouped_patch_embeds) / temperature
    pair_mask = token_mask[:, :, None] & token_mask[:, None, :]
    token_group_logits = token_group_logits.masked_fill(~pair_mask, torch.finfo(token_group_logits.dtype).min)
    token_to_group = -token_group_logits.log_softmax(dim=2).diagonal(dim1=1, dim2=2)
    group_to_token = -token_group_logits.log_softmax(dim=1).diagonal(dim1=1, dim2=2)
    per_token = (token_to_group + group_to_token) / 2 * token_mask

    tokens_per_sample = token_mask.sum(dim=1)
    has_tokens = tokens_per_sample > 0
    per_sample = per_token.sum(dim=1) / tokens_per_sample.clamp_min(1)
    loss = (per_sample * has_tokens).sum() / has_tokens.sum().clamp_min(1)
    return loss, weights


# ---------------------------------------------------------------------------------------------------------------------
# Distributed: global-batch SIA
# ---------------------------------------------------------------------------------------------------------------------


def gather_global_batch(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, report_embeds: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    r"""
    Gathers the global batch across processes (open_clip's local-loss scheme): image and report embeddings with
    gradients (the backward sums each process's contribution), `report_embeds` without. Each process then scores
    its local rows against the global columns, so that loss and gradients equal one process holding the batch.

    Returns:
        `(all_image_embeds, all_text_embeds, all_report_embeds, row_offset)`; the inputs and 0 on one process.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return image_embeds, text_embeds, report_embeds, 0
    world_size = torch.distributed.get_world_size()
    if world_size == 1:
        return image_embeds, text_embeds, report_embeds, 0

    local_size = torch.tensor([image_embeds.shape[0]], device=image_embeds.device)
    sizes = [torch.zeros_like(local_size) for _ in range(world_size)]
    torch.distributed.all_gather(sizes, local_size)
    if any(size.item() != local_size.item() for size in sizes):
        raise ValueError(
            f"Global-batch SIA needs the same batch size on every process, got {[s.item() for s in sizes]}; "
            "keep accelerate's `even_batches=True` (the default) or drop the last incomplete batch."
        )

    with warnings.catch_warnings():
        # the autograd-aware collective is the one that carries gradients on every backend, gloo included
        warnings.simplefilter("ignore", category=UserWarning)
        from torch.distributed.nn.functional import all_gather

        all_image_embeds = torch.cat(all_gather(image_embeds), dim=0)
        all_text_embeds = torch.cat(all_gather(text_embeds), dim=0)
    all_report_embeds = None
    if report_embeds is not None:
        gathered = [torch.empty_like(report_embeds) for _ in range(world_size)]
        torch.distributed.all_gather(gathered, report_embeds.contiguous())
        all_report_embeds = torch.cat(gathered, dim=0)
    row_offset = torch.distributed.get_rank() * image_embeds.shape[0]
    return all_image_embeds, all_text_embeds, all_report_embeds, row_offset


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
            L2-normalised patch embeddings.
        token_patch_weights (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_patches)`, *optional*):
            The sparse STA weights `A`, the word-to-patch grounding map; rows of ignored tokens are zero.
        text_model_output (`BaseModelOutput`): the text backbone's output.
        vision_model_output (`BaseModelOutput`): the vision backbone's output.
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

    def to_tuple(self) -> tuple[Any]:
        return tuple(value.to_tuple() if isinstance(value, ModelOutput) else value for value in self.values())


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------


def backbone_from_config(config) -> PreTrainedModel:
    """An `AutoModel` backbone without its pooler where the class has one: SISTA pools itself, and an unused pooler
    would leave parameters without gradients under DDP."""
    model_class = MODEL_MAPPING[type(config)]
    kwargs = {"add_pooling_layer": False} if "add_pooling_layer" in inspect.signature(model_class).parameters else {}
    return AutoModel.from_config(config, **kwargs)


class SistaPreTrainedModel(PreTrainedModel):
    config_class = SistaConfig
    base_model_prefix = "sista"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = []
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, SistaModel):
            nn.init.constant_(module.logit_scale, self.config.logit_scale_init_value)


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
        # by model_type, not isinstance: remote code may load the config module under another package name
        if getattr(config, "model_type", None) != SistaConfig.model_type:
            raise TypeError(f"`config` must be a SistaConfig, got {type(config).__name__}.")
        super().__init__(config)
        self.vision_model = vision_model if vision_model is not None else backbone_from_config(config.vision_config)
        self.text_model = text_model if text_model is not None else backbone_from_config(config.text_config)
        # one source of truth for the sub-configs, as VisionTextDualEncoderModel does
        self.vision_model.config = self.config.vision_config
        self.text_model.config = self.config.text_config

        self.visual_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.post_init()

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
        for model_config, kwargs in ((vision_config, vision_kwargs), (text_config, text_kwargs)):
            if "add_pooling_layer" in inspect.signature(MODEL_MAPPING[type(model_config)]).parameters:
                kwargs.setdefault("add_pooling_layer", False)
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

    def _check_pixel_values(self, pixel_values: torch.Tensor | None):
        if pixel_values is None:
            raise ValueError("`pixel_values` is required: a float tensor of shape (batch_size, channels, height, width).")
        expected_channels = getattr(self.config.vision_config, "num_channels", None)
        if pixel_values.dim() != 4 or (expected_channels is not None and pixel_values.shape[1] != expected_channels):
            raise ValueError(
                f"`pixel_values` must have shape (batch_size, {expected_channels}, height, width) for this vision "
                f"config, got {tuple(pixel_values.shape)}."
            )

    def encode_image(self, pixel_values: torch.Tensor, **kwargs) -> tuple[ModelOutput, torch.Tensor, torch.Tensor]:
        r"""
        Returns `(vision_outputs, image_features, patch_features)`: the backbone output, the projected global feature
        `(batch_size, projection_dim)` and the projected patch features `(batch_size, num_patches, projection_dim)`,
        both before L2 normalisation.
        """
        self._check_pixel_values(pixel_values)
        vision_outputs = self.vision_model(pixel_values=pixel_values, return_dict=True, **kwargs)
        hidden_states = vision_outputs.last_hidden_state
        if hidden_states.dim() == 4:  # convolutional backbones: (batch, channels, height, width)
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        num_prefix_tokens = self.num_prefix_tokens(pixel_values, hidden_states.shape[1])
        patch_states = hidden_states[:, num_prefix_tokens:]
        if self.config.vision_pooling == "cls":
            if num_prefix_tokens == 0:
                raise ValueError(
                    f"`vision_pooling='cls'` needs a backbone with a class token; "
                    f"{type(self.vision_model).__name__} has none: use vision_pooling='mean'."
                )
            pooled = hidden_states[:, 0]
        else:
            pooled = patch_states.mean(dim=1)
        return vision_outputs, self.visual_projection(pooled), self.visual_projection(patch_states)

    def num_prefix_tokens(self, pixel_values: torch.Tensor, sequence_length: int) -> int:
        """Tokens before the patch tokens ([CLS], distillation or register tokens), from the patch grid size."""
        patch_size = getattr(self.config.vision_config, "patch_size", None)
        if not isinstance(patch_size, int):
            return 0
        num_patches = (pixel_values.shape[-2] // patch_size) * (pixel_values.shape[-1] // patch_size)
        return max(sequence_length - num_patches, 0)

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
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` must have the shape of `input_ids` {tuple(input_ids.shape)}, "
                f"got {tuple(attention_mask.shape)}."
            )
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
            pooled = (token_states * mask).sum(dim=1) / mask.sum(dim=1)
        return text_outputs, self.text_projection(pooled), self.text_projection(token_states)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        r"""
        Returns the vision backbone's output with `pooler_output` replaced by the projected image features of shape
        `(batch_size, projection_dim)` (not normalised), as CLIP does in transformers 5.
        """
        vision_outputs, image_features, _ = self.encode_image(pixel_values, **kwargs)
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
            ignored = torch.tensor(self.config.sta_ignore_token_ids, device=input_ids.device)
            token_mask = token_mask & ~torch.isin(input_ids, ignored)
        return token_mask

    def compute_sia_loss(
        self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, report_embeds: torch.Tensor | None
    ) -> torch.Tensor:
        """SIA on the global batch (gathered under torch.distributed)."""
        if self.config.sia_similarity_source == "text_embeds":
            report_embeds = text_embeds.detach()
        elif report_embeds is None:
            if self.config.sia_threshold <= 1:
                raise ValueError(
                    "`report_embeds` is required for SIA with `sia_similarity_source='report_embeds'`: pass the "
                    "precomputed report-similarity embeddings (batch_size, dim), or set "
                    "`config.sia_similarity_source='text_embeds'`, or `config.sia_threshold > 1` for plain CLIP."
                )
            report_embeds = text_embeds.detach()  # unused: a threshold above 1 flags no pair
        report_embeds = F.normalize(report_embeds.float(), dim=-1)

        all_image_embeds, all_text_embeds, all_report_embeds, row_offset = gather_global_batch(
            image_embeds, text_embeds, report_embeds
        )
        logit_scale = self.logit_scale.exp().clamp(max=100)
        return sia_loss(
            logits_per_image=logit_scale * image_embeds @ all_text_embeds.t(),
            logits_per_text=logit_scale * text_embeds @ all_image_embeds.t(),
            report_similarity=report_embeds @ all_report_embeds.t(),
            threshold=self.config.sia_threshold,
            mode=self.config.sia_mode,
            soft_target=self.config.sia_soft_target,
            row_offset=row_offset,
        )

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
            output_token_patch_weights (`bool`, *optional*): return the STA grounding map `token_patch_weights`.

        Image and text batch sizes may differ when neither a loss nor the grounding map is asked (zero-shot: images
        × prompts). Edge cases with a documented finite value: batch size 1 gives `loss_sia = 0` (no negative); a
        batch whose reports are all false negatives of each other gives `loss_sia = 0` in "eliminate" mode; a report
        with no token left for STA (only special tokens) is left out of `loss_sta`, which is 0 if no report has one.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        backbone_kwargs = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
        backbone_kwargs = {key: value for key, value in backbone_kwargs.items() if value is not None}
        if position_ids is not None:
            kwargs["position_ids"] = position_ids

        vision_outputs, image_features, patch_features = self.encode_image(pixel_values, **backbone_kwargs)
        text_outputs, text_features, token_features = self.encode_text(
            input_ids, attention_mask, token_type_ids, **backbone_kwargs, **kwargs
        )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)

        image_embeds = F.normalize(image_features, dim=-1)
        text_embeds = F.normalize(text_features, dim=-1)
        image_patch_embeds = F.normalize(patch_features, dim=-1)
        text_token_embeds = F.normalize(token_features, dim=-1)

        logit_scale = self.logit_scale.exp().clamp(max=100)
        logits_per_text = logit_scale * text_embeds @ image_embeds.t()
        logits_per_image = logits_per_text.t()

        paired = return_loss or output_token_patch_weights
        if paired and image_embeds.shape[0] != text_embeds.shape[0]:
            raise ValueError(
                f"`pixel_values` and `input_ids` must hold the same number of samples for the loss or the grounding "
                f"map, got {image_embeds.shape[0]} images and {text_embeds.shape[0]} reports."
            )
        if report_embeds is not None and (report_embeds.dim() != 2 or report_embeds.shape[0] != text_embeds.shape[0]):
            raise ValueError(
                f"`report_embeds` must have shape ({text_embeds.shape[0]}, dim), got {tuple(report_embeds.shape)}."
            )

        loss = loss_sia = loss_sta = token_patch_weights = None
        # a loss with weight 0 is not computed, so the ablations cost what they should
        if output_token_patch_weights or (return_loss and self.config.sta_weight > 0):
            token_mask = self.sta_token_mask(input_ids, attention_mask)
            loss_sta, token_patch_weights = sta_loss(
                text_token_embeds,
                image_patch_embeds,
                token_mask,
                sparsity_threshold=self.config.sta_sparsity_threshold,
                temperature=self.config.sta_temperature,
            )
            token_patch_weights = token_patch_weights * token_mask[..., None]
            if not output_token_patch_weights:
                token_patch_weights = None
        if return_loss:
            if self.config.sia_weight > 0:
                loss_sia = self.compute_sia_loss(image_embeds, text_embeds, report_embeds)
            loss = sum(
                weight * term
                for weight, term in ((self.config.sia_weight, loss_sia), (self.config.sta_weight, loss_sta))
                if term is not None and weight > 0
            )

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
        )
        return output if return_dict else output.to_tuple()


SistaModel.register_for_auto_class("AutoModel")

__all__ = [
    "SistaModel",
    "SistaOutput",
    "SistaPreTrainedModel",
    "false_negative_mask",
    "gather_global_batch",
    "semantic_aware_contrastive_loss",
    "sia_loss",
    "sparse_token_patch_weights",
    "sta_loss",
]
