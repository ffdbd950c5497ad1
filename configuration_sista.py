# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""SISTA model configuration."""

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import logging


logger = logging.get_logger(__name__)

SIA_MODES = ("eliminate", "soft", "off")
SIA_SOFT_TARGETS = ("uniform", "similarity")
SIA_SIMILARITY_SOURCES = ("report_embeds", "text_embeds")
POOLING_MODES = ("cls", "mean")
VISION_POOLING_MODES = (*POOLING_MODES, "pooler")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
# what a token of STA is contrasted against: SPARC's other tokens of its report, or its own grouping on other images
STA_NEGATIVES = ("tokens", "images", "tokens+images")
# the segmentation decoder: a U-Net over the stages of a hierarchical tower (GLoRIA's and MGCA's frozen-encoder
# protocol), SETR's progressive upsampling of the last patch grid, or the U-Net wherever the tower has stages
SEGMENTATION_DECODERS = ("auto", "setr_pup", "unet")
# vision backbones whose hidden states are feature maps at several strides, each halving the last
STAGED_VISION_BACKBONES = ("resnet", "convnext", "swin")
# how a token's similarities to the patches become its grouping weights `A`
STA_SPARSITIES = ("threshold", "top_k", "softmax", "max")
# what STA aligns: every token, or the content words (subwords merged, stop words left out)
STA_TOKEN_UNITS = ("tokens", "words")

# Small defaults so that `SistaConfig()` builds a model that trains on a CPU; real runs pass their own
# sub-configs or use `SistaModel.from_vision_text_pretrained`.
DEFAULT_VISION_CONFIG = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "image_size": 224,
    "patch_size": 16,
    "num_channels": 3,
}
DEFAULT_TEXT_CONFIG = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "max_position_embeddings": 256,
}


class SistaConfig(PretrainedConfig):
    r"""
    Configuration of a [`SistaModel`]: a vision backbone and a text backbone (any `AutoConfig` type), projection
    heads into a shared space, and the hyper-parameters of the two SISTA objectives, SIA (semantic-aware instance
    alignment) and STA (sparse token alignment).

    Args:
        vision_config (`dict` or `PretrainedConfig`, *optional*):
            Configuration of the vision backbone. A dict needs a `model_type`; defaults to a small ViT. Any backbone
            whose output is a patch grid works: convolutional (ResNet, ConvNeXt: `last_hidden_state` of shape
            `(batch_size, channels, height, width)`), hierarchical (Swin: patch tokens at stride
            `patch_size * 2^(len(depths) - 1)`) or ViT-like (ViT, DeiT, BEiT, Dinov2 with or without registers: patch
            tokens after the class, distillation or register tokens). The feature width comes from the backbone
            (`num_features`, `hidden_sizes[-1]` or `hidden_size`).
        text_config (`dict` or `PretrainedConfig`, *optional*):
            Configuration of the text backbone. A dict needs a `model_type`; defaults to a small BERT.
        projection_dim (`int`, *optional*, defaults to 256):
            Size of the shared embedding space of images, reports, patches and tokens.
        logit_scale_init_value (`float`, *optional*, defaults to 2.6592):
            Initial value of the learnable log temperature of SIA (ln(1/0.07), as in CLIP).
        vision_pooling (`str`, *optional*, defaults to `"cls"`):
            Global image feature: the first token (`"cls"`, needs a class token: not ResNet, ConvNeXt or Swin), the
            mean of the patch features (`"mean"`), or the backbone's own `pooler_output` (`"pooler"`, which keeps the
            backbone's pooling layer: ConvNeXt's final layer norm and BEiT's mean-pooling layer norm act only there,
            so with `"cls"` or `"mean"` ConvNeXt's final layer norm gets no gradient).
        text_pooling (`str`, *optional*, defaults to `"cls"`):
            Global report feature: the first token (`"cls"`) or the attention-masked mean of the tokens (`"mean"`).
        sia_weight (`float`, *optional*, defaults to 1.0):
            Weight of the SIA loss in the total loss; 0 turns SIA off.
        sia_threshold (`float`, *optional*, defaults to 0.99):
            Two different reports whose report-similarity is at least this value count as false negatives of each
            other; a cosine similarity in [-1, 1]. The right value belongs to the report embeddings: 0.99 means "the
            same label vector" for the default label-vector embeddings (`examples/report_embeddings.py` stores each
            encoder's threshold with its embeddings, and `examples/pretrain.py` uses it). A value above 1 is an error:
            `sia_mode="off"` switches false-negative removal off.
        sia_mode (`str`, *optional*, defaults to `"eliminate"`):
            What SIA does with false negatives: `"eliminate"` removes them from the softmax denominator; `"soft"`
            treats them as extra positives of a soft target distribution; `"off"` flags none, so SIA is the CLIP loss
            and needs no `report_embeds`.
        sia_soft_target (`str`, *optional*, defaults to `"uniform"`):
            Target distribution over the positives in `"soft"` mode: `"uniform"` or weighted by `"similarity"`.
        sia_similarity_source (`str`, *optional*, defaults to `"report_embeds"`):
            Where report-similarity comes from: precomputed `report_embeds` passed to `forward` (computed once per
            dataset by a frozen encoder), or the online report embeddings, detached (`"text_embeds"`).
        sta_weight (`float`, *optional*, defaults to 1.0):
            Weight of the STA loss in the total loss; 0 turns STA off.
        sta_sparsity_threshold (`float`, *optional*):
            Min-max normalised token-patch similarities below this value get zero weight. `None` means 1/P, with P
            the number of patches.
        sta_temperature (`float`, *optional*, defaults to 0.1):
            Temperature of the within-report token-to-region contrast of STA.
        sta_negatives (`str`, *optional*, defaults to `"tokens"`):
            The negatives of a token in STA: `"tokens"`, the language-grouped embeddings of the other tokens of its
            report (SPARC, the design); `"images"`, its own language-grouped embedding on the other images of the
            batch, which ties the word to what its image shows; `"tokens+images"`, the mean of both losses.
        sta_sparsity (`str`, *optional*, defaults to `"threshold"`):
            How a token's similarities to the patches become its grouping weights `A`: `"threshold"`, min-max
            normalised and cut at `sta_sparsity_threshold` (SPARC, the design); `"top_k"`, min-max normalised and
            only the `sta_top_k` most similar patches kept; `"softmax"`, a softmax over the patches at
            `sta_sparsity_temperature`; `"max"`, the single most similar patch (FILIP's token-wise maximum: the
            token's score on an image is `max_k <w_ij, p_k>`). All are L1-normalised over the patches.
        sta_top_k (`int`, *optional*, defaults to 4):
            Patches a token keeps with `sta_sparsity="top_k"`.
        sta_sparsity_temperature (`float`, *optional*, defaults to 0.05):
            Temperature of the grouping softmax with `sta_sparsity="softmax"` (smaller selects fewer patches).
        sta_center_patches (`bool`, *optional*, defaults to `False`):
            Subtract from every patch embedding, before STA, the mean patch embedding of its grid cell (re-normalised
            afterwards), so that what all images share at a position (a position code) cannot serve STA. In training
            the mean is the batch's, without gradient; an exponential moving average of it (the `sta_patch_mean`
            buffer, saved with the weights) is used in evaluation mode.
        sta_patch_mean_cells (`int`, *optional*, defaults to 0):
            Not a setting: the grid cells of the saved `sta_patch_mean`, recorded by the model at its first centred
            training step so that a checkpoint loads into a buffer of the right size.
        sta_start_step (`int`, *optional*, defaults to 0):
            Training step (0-based, as `Trainer`'s `global_step`) at which STA starts; before it only SIA trains, so
            that the local loss starts once the global alignment tells images apart. Needs the step: `forward`'s
            `training_step` (passed by `SistaTrainer`).
        sta_warmup_steps (`int`, *optional*, defaults to 0):
            Steps over which STA's weight then rises linearly from 0 to `sta_weight` (0: it starts at full weight).
        sta_token_unit (`str`, *optional*, defaults to `"tokens"`):
            What STA aligns: every token (`"tokens"`, the design), or content words (`"words"`: the projected
            features of a word's subword tokens averaged into one word embedding, stop words and punctuation left
            out, as GLoRIA and MGCA weight words). `"words"` needs `forward`'s `word_ids` (from
            `SistaDataCollator(content_word_ids=True)`); the grounding map stays per token.
        sta_ignore_token_ids (`list[int]`, *optional*):
            Token ids that STA does not align (the tokenizer's special tokens, e.g. `tokenizer.all_special_ids`).
            Padding is always ignored through the attention mask.
        freeze_encoder (`bool`, *optional*, defaults to `False`):
            Task heads only: keep the vision backbone frozen (no gradient, eval mode, e.g. linear probing) and train
            the head alone; `False` fine-tunes the backbone too.
        classifier_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the pooled image feature before the linear classifier of [`SistaForImageClassification`].
        decoder_hidden_size (`int`, *optional*, defaults to 256):
            Channels of the convolutional decoder of [`SistaForSemanticSegmentation`] and of the dense head of
            [`SistaForObjectDetection`].
        segmentation_decoder (`str`, *optional*, defaults to `"auto"`):
            Decoder of [`SistaForSemanticSegmentation`]: `"unet"`, a U-Net that upsamples the last feature map and
            concatenates the backbone's feature map of every finer stride on the way (GLoRIA's and MGCA's protocol;
            needs a tower with stages: ResNet, ConvNeXt, Swin); `"setr_pup"`, SETR's progressive upsampling of the
            last patch grid alone (the decoder of plain ViTs, whose layers all share one grid); `"auto"`, the U-Net
            where the tower has stages and SETR-PUP otherwise.
        segmentation_dice_weight (`float`, *optional*, defaults to 1.0):
            Weight of the soft Dice loss in the segmentation loss.
        segmentation_ce_weight (`float`, *optional*, defaults to 1.0):
            Weight of the (binary) cross-entropy in the segmentation loss.
        semantic_loss_ignore_index (`int`, *optional*, defaults to -100):
            Segmentation label value that the loss ignores (e.g. unlabelled pixels). Not 255, so that a binary mask
            stored as 0/255 is an error rather than a mask whose lesions are all ignored.
        detection_upsample_factor (`int`, *optional*, defaults to 2):
            Power of 2 by which [`SistaForObjectDetection`] upsamples the patch grid; the output stride is the
            backbone's stride (the `patch_size` of a ViT) divided by `detection_upsample_factor`.
        detection_size_loss_weight (`float`, *optional*, defaults to 0.1):
            Weight of the L1 box-size loss (sizes in output cells), as in CenterNet.
        detection_offset_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the L1 centre sub-cell offset loss.
        detection_max_detections (`int`, *optional*, defaults to 100):
            Maximum number of boxes per image kept by the detection post-processing.
        detection_nms_iou_threshold (`float`, *optional*, defaults to 0.5):
            Boxes of the same class overlapping a higher-scoring one by more than this IoU are suppressed; 1 turns
            box NMS off (the heatmap peak extraction still applies).

        Task heads also read the standard `num_labels`, `id2label`, `label2id` and `problem_type` (`None`,
        `"single_label_classification"`, `"multi_label_classification"` or `"regression"`).

    Example:

    ```python
    >>> from transformers import BertConfig, ViTConfig
    >>> from configuration_sista import SistaConfig
    >>> from modeling_sista import SistaModel

    >>> config = SistaConfig.from_vision_text_configs(ViTConfig(image_size=224), BertConfig(), projection_dim=512)
    >>> model = SistaModel(config)
    ```"""

    model_type = "sista"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(AutoConfig, model_type="vit", init_kwargs=DEFAULT_VISION_CONFIG),
        "text_config": SubConfigSpec(AutoConfig, model_type="bert", init_kwargs=DEFAULT_TEXT_CONFIG),
    }

    vision_config: PretrainedConfig | dict | None = None
    text_config: PretrainedConfig | dict | None = None
    projection_dim: int = 256
    logit_scale_init_value: float = 2.6592
    vision_pooling: str = "cls"
    text_pooling: str = "cls"
    sia_weight: float = 1.0
    sia_threshold: float = 0.99
    sia_mode: str = "eliminate"
    sia_soft_target: str = "uniform"
    sia_similarity_source: str = "report_embeds"
    sta_weight: float = 1.0
    sta_sparsity_threshold: float | None = None
    sta_temperature: float = 0.1
    sta_negatives: str = "tokens"
    sta_sparsity: str = "threshold"
    sta_top_k: int = 4
    sta_sparsity_temperature: float = 0.05
    sta_center_patches: bool = False
    sta_patch_mean_cells: int = 0
    sta_start_step: int = 0
    sta_warmup_steps: int = 0
    sta_token_unit: str = "tokens"
    sta_ignore_token_ids: list[int] | None = None
    freeze_encoder: bool = False
    classifier_dropout: float = 0.0
    decoder_hidden_size: int = 256
    segmentation_decoder: str = "auto"
    segmentation_dice_weight: float = 1.0
    segmentation_ce_weight: float = 1.0
    semantic_loss_ignore_index: int = -100
    detection_upsample_factor: int = 2
    detection_size_loss_weight: float = 0.1
    detection_offset_loss_weight: float = 1.0
    detection_max_detections: int = 100
    detection_nms_iou_threshold: float = 0.5

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate_sista_fields()

    def validate_sista_fields(self):
        """Raises a `ValueError` naming the first SISTA field whose value cannot be used."""
        if self.projection_dim <= 0:
            raise ValueError(f"`projection_dim` must be a positive integer, got {self.projection_dim}.")
        for name, allowed in (
            ("vision_pooling", VISION_POOLING_MODES),
            ("text_pooling", POOLING_MODES),
            ("sia_mode", SIA_MODES),
            ("sia_soft_target", SIA_SOFT_TARGETS),
            ("sia_similarity_source", SIA_SIMILARITY_SOURCES),
            ("sta_negatives", STA_NEGATIVES),
            ("sta_sparsity", STA_SPARSITIES),
            ("sta_token_unit", STA_TOKEN_UNITS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.")
        for name in ("sia_weight", "sta_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if self.sia_weight == 0 and self.sta_weight == 0:
            raise ValueError("`sia_weight` and `sta_weight` are both 0: at least one objective must be on.")
        if self.sia_threshold < -1:
            raise ValueError(f"`sia_threshold` must be >= -1 (a cosine similarity), got {self.sia_threshold}.")
        if self.sia_threshold > 1:
            raise ValueError(
                f"`sia_threshold` must be <= 1 (a cosine similarity), got {self.sia_threshold}. A threshold above 1 "
                "was the old way to switch false-negative removal off: set `sia_mode=\"off\"` instead (and a "
                "threshold in [-1, 1])."
            )
        if self.sta_sparsity_threshold is not None and not 0 <= self.sta_sparsity_threshold <= 1:
            raise ValueError(
                f"`sta_sparsity_threshold` must lie in [0, 1] (it thresholds min-max normalised similarities), "
                f"got {self.sta_sparsity_threshold}."
            )
        if self.sta_temperature <= 0:
            raise ValueError(f"`sta_temperature` must be > 0, got {self.sta_temperature}.")
        if not isinstance(self.sta_top_k, int) or self.sta_top_k < 1:
            raise ValueError(f"`sta_top_k` must be a positive integer, got {self.sta_top_k!r}.")
        if self.sta_sparsity_temperature <= 0:
            raise ValueError(f"`sta_sparsity_temperature` must be > 0, got {self.sta_sparsity_temperature}.")
        if not isinstance(self.sta_center_patches, bool):
            raise ValueError(f"`sta_center_patches` must be True or False, got {self.sta_center_patches!r}.")
        for name in ("sta_start_step", "sta_warmup_steps", "sta_patch_mean_cells"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be an integer >= 0, got {getattr(self, name)!r}.")
        if self.sta_ignore_token_ids is not None and not all(
            isinstance(token_id, int) for token_id in self.sta_ignore_token_ids
        ):
            raise ValueError(f"`sta_ignore_token_ids` must be a list of ints, got {self.sta_ignore_token_ids!r}.")
        self.validate_task_head_fields()

    def validate_task_head_fields(self):
        """Raises a `ValueError` naming the first task-head field whose value cannot be used."""
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"`problem_type` must be None or one of {PROBLEM_TYPES}, got {self.problem_type!r}.")
        if not 0 <= self.classifier_dropout < 1:
            raise ValueError(f"`classifier_dropout` must lie in [0, 1), got {self.classifier_dropout}.")
        for name in ("decoder_hidden_size", "detection_max_detections"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)!r}.")
        for name in (
            "segmentation_dice_weight",
            "segmentation_ce_weight",
            "detection_size_loss_weight",
            "detection_offset_loss_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if self.segmentation_decoder not in SEGMENTATION_DECODERS:
            raise ValueError(
                f"`segmentation_decoder` must be one of {SEGMENTATION_DECODERS}, got {self.segmentation_decoder!r}."
            )
        vision_type = getattr(self.vision_config, "model_type", None)
        if self.segmentation_decoder == "unet" and vision_type not in STAGED_VISION_BACKBONES:
            raise ValueError(
                f"`segmentation_decoder='unet'` reads the feature maps of a tower's stages, but the vision backbone "
                f"{vision_type!r} has none SISTA knows (U-Net towers: {STAGED_VISION_BACKBONES}); use 'setr_pup' or "
                "'auto'."
            )
        if self.segmentation_dice_weight == 0 and self.segmentation_ce_weight == 0:
            raise ValueError(
                "`segmentation_dice_weight` and `segmentation_ce_weight` are both 0: there is no segmentation loss."
            )
        factor = self.detection_upsample_factor
        if not isinstance(factor, int) or factor < 1 or factor & (factor - 1):
            raise ValueError(f"`detection_upsample_factor` must be a power of 2 (1, 2, 4, ...), got {factor!r}.")
        if not 0 < self.detection_nms_iou_threshold <= 1:
            raise ValueError(
                f"`detection_nms_iou_threshold` must lie in (0, 1], got {self.detection_nms_iou_threshold}."
            )

    @classmethod
    def from_vision_text_configs(cls, vision_config: PretrainedConfig, text_config: PretrainedConfig, **kwargs):
        r"""
        Builds a [`SistaConfig`] from an existing vision configuration and an existing text configuration.

        Returns:
            [`SistaConfig`]: the composite configuration; `kwargs` set its other fields.
        """
        return cls(vision_config=vision_config.to_dict(), text_config=text_config.to_dict(), **kwargs)


SistaConfig.register_for_auto_class()

__all__ = ["SistaConfig"]
