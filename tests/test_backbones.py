"""Vision backbone families as `vision_config` (ResNet, ConvNeXt, Swin, ViT, DeiT, BEiT, Dinov2 with and without
registers): features, patch grid and grounding map against the backbone run on its own, task heads, checkpoints
built from a saved backbone, save/load and the Auto classes with remote code."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModel,
    BeitConfig,
    BertConfig,
    BertModel,
    ConvNextConfig,
    DeiTConfig,
    Dinov2Config,
    Dinov2WithRegistersConfig,
    PvtConfig,
    ResNetConfig,
    SwinConfig,
    ViTConfig,
)

from configuration_sista import SistaConfig
from conftest import SPECIAL_TOKEN_IDS, TINY_VOCAB, tiny_batch
from modeling_sista import (
    SistaForImageClassification,
    SistaForObjectDetection,
    SistaForSemanticSegmentation,
    SistaModel,
    sparse_token_patch_weights,
    sta_loss,
    vision_output_stride,
)


IMAGE_SIZE = 32
VIT_SIZES = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "image_size": IMAGE_SIZE,
    "patch_size": 8,
}
NUM_REGISTER_TOKENS = 3

# family -> (tiny vision config, the tokens its last_hidden_state holds before the patch tokens, as the family's
# documentation states them: [CLS]; DeiT's [CLS] + distillation; Dinov2's [CLS] + registers; none for Swin; None for
# a feature map)
BACKBONES = {
    "resnet": (lambda: ResNetConfig(embedding_size=8, hidden_sizes=[8, 12], depths=[1, 1], layer_type="basic"), None),
    "convnext": (lambda: ConvNextConfig(hidden_sizes=[8, 12], depths=[1, 1], num_stages=2), None),
    "swin": (
        lambda: SwinConfig(
            image_size=IMAGE_SIZE, patch_size=2, embed_dim=8, depths=[1, 1, 1], num_heads=[1, 2, 2], window_size=2
        ),
        0,
    ),
    "vit": (lambda: ViTConfig(**VIT_SIZES), 1),
    "deit": (lambda: DeiTConfig(**VIT_SIZES), 2),
    "beit": (lambda: BeitConfig(**VIT_SIZES, use_mean_pooling=True), 1),
    "dinov2": (lambda: Dinov2Config(**VIT_SIZES), 1),
    "dinov2_registers": (
        lambda: Dinov2WithRegistersConfig(**VIT_SIZES, num_register_tokens=NUM_REGISTER_TOKENS),
        1 + NUM_REGISTER_TOKENS,
    ),
}
WITHOUT_CLASS_TOKEN = ("resnet", "convnext", "swin")
# the pooling each family pre-trains with: its class token where it has one, else its own pooled output
DEFAULT_POOLING = {name: "pooler" if name in WITHOUT_CLASS_TOKEN else "cls" for name in BACKBONES}
FAMILY_POOLINGS = [
    (name, pooling)
    for name in BACKBONES
    for pooling in ("cls", "mean", "pooler")
    if not (pooling == "cls" and name in WITHOUT_CLASS_TOKEN)
]
HEADS = (SistaForImageClassification, SistaForSemanticSegmentation, SistaForObjectDetection)
HEAD_AUTO_CLASSES = (
    "AutoModelForImageClassification",
    "AutoModelForSemanticSegmentation",
    "AutoModelForObjectDetection",
)


def tiny_text_config() -> BertConfig:
    return BertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        vocab_size=len(TINY_VOCAB),
        max_position_embeddings=64,
    )


def family_config(name: str, **kwargs) -> SistaConfig:
    kwargs.setdefault("vision_pooling", DEFAULT_POOLING[name])
    kwargs.setdefault("projection_dim", 16)
    kwargs.setdefault("sta_ignore_token_ids", SPECIAL_TOKEN_IDS)
    kwargs.setdefault("decoder_hidden_size", 32)
    return SistaConfig.from_vision_text_configs(BACKBONES[name][0](), tiny_text_config(), **kwargs)


def family_model(name: str, model_class=SistaModel, **kwargs):
    torch.manual_seed(0)
    return model_class(family_config(name, **kwargs)).eval()


def images(batch_size=2, height=IMAGE_SIZE, width=IMAGE_SIZE, seed=0):
    return torch.randn(batch_size, 3, height, width, generator=torch.Generator().manual_seed(seed))


def backbone_reference(name: str, vision_model, pixel_values) -> dict:
    """The backbone run on its own: its patch features row by row, its grid, its class token and pooled output."""
    outputs = vision_model(pixel_values=pixel_values, output_hidden_states=True)
    hidden = outputs.last_hidden_state
    num_prefix_tokens = BACKBONES[name][1]
    if num_prefix_tokens is None:  # a feature map (batch_size, channels, height, width)
        grid = tuple(hidden.shape[-2:])
        patches = hidden.permute(0, 2, 3, 1).reshape(hidden.shape[0], -1, hidden.shape[1])
        class_token = None
    else:
        patches = hidden[:, num_prefix_tokens:]
        class_token = hidden[:, 0] if num_prefix_tokens else None
        if name == "swin":  # Swin's encoder reports its last stage as a map
            grid = tuple(outputs.reshaped_hidden_states[-1].shape[-2:])
        else:
            patch_size = vision_model.config.patch_size
            grid = (pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size)
    pooler_output = outputs.get("pooler_output")
    return {
        "patches": patches,
        "grid": grid,
        "class_token": class_token,
        "pooler_output": None if pooler_output is None else pooler_output.flatten(1),
    }


def expected_pooled(reference: dict, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return reference["class_token"]
    if pooling == "pooler":
        return reference["pooler_output"]
    return reference["patches"].mean(dim=1)


# --------------------------------------------------------------------------------------------------------------------
# Features, grid and grounding against the backbone run on its own
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,pooling", FAMILY_POOLINGS)
def test_features_are_the_backbones_own_output_projected(name, pooling):
    model = family_model(name, vision_pooling=pooling)
    batch = tiny_batch(batch_size=2, sequence_length=8)
    with torch.no_grad():
        outputs = model(**batch, return_loss=True)
        reference = backbone_reference(name, model.vision_model, batch["pixel_values"])

    num_patches = reference["grid"][0] * reference["grid"][1]
    assert reference["patches"].shape[1] == num_patches, "the reference grid must cover the patch tokens"
    assert outputs.patch_grid_size == reference["grid"]
    assert model.visual_projection.in_features == reference["patches"].shape[-1]
    torch.testing.assert_close(
        outputs.image_patch_embeds, F.normalize(model.visual_projection(reference["patches"]), dim=-1)
    )
    torch.testing.assert_close(
        outputs.image_embeds, F.normalize(model.visual_projection(expected_pooled(reference, pooling)), dim=-1)
    )
    assert torch.isfinite(outputs.loss)


def test_each_family_pools_as_its_documentation_says():
    """BEiT's mean pooling is a layer norm of the patch-token mean ([CLS] left out); Dinov2's pooled output is its
    [CLS] token, registers or not; Swin's and ResNet's are the patch mean."""
    batch = tiny_batch(batch_size=2, sequence_length=8)
    pixel_values = batch["pixel_values"]
    with torch.no_grad():
        beit = family_model("beit", vision_pooling="pooler")
        hidden = beit.vision_model(pixel_values=pixel_values).last_hidden_state
        torch.testing.assert_close(
            beit(**batch).image_embeds,
            F.normalize(beit.visual_projection(beit.vision_model.pooler.layernorm(hidden[:, 1:].mean(1))), dim=-1),
        )
        for name in ("dinov2", "dinov2_registers"):
            model = family_model(name, vision_pooling="pooler")
            backbone_outputs = model.vision_model(pixel_values=pixel_values)
            torch.testing.assert_close(backbone_outputs.pooler_output, backbone_outputs.last_hidden_state[:, 0])
        for name in ("swin", "resnet"):
            model = family_model(name, vision_pooling="pooler")
            reference = backbone_reference(name, model.vision_model, pixel_values)
            torch.testing.assert_close(reference["pooler_output"], reference["patches"].mean(dim=1))


@pytest.mark.parametrize("name", BACKBONES)
def test_grounding_map_lays_on_the_backbones_grid(name):
    model = family_model(name)
    batch = tiny_batch(batch_size=2, sequence_length=8)
    with torch.no_grad():
        outputs = model(**batch, return_loss=True, output_token_patch_weights=True)
        reference = backbone_reference(name, model.vision_model, batch["pixel_values"])
    grid_height, grid_width = reference["grid"]
    patch_embeds = F.normalize(model.visual_projection(reference["patches"]), dim=-1)
    token_mask = batch["attention_mask"].bool() & (batch["input_ids"] > max(SPECIAL_TOKEN_IDS))
    expected_loss, _ = sta_loss(outputs.text_token_embeds, patch_embeds, token_mask, None, 0.1)
    torch.testing.assert_close(outputs.loss_sta, expected_loss)

    # cell (row, column) of the map is the similarity with the feature at (row, column) of the backbone's grid
    patch_map = patch_embeds.reshape(2, grid_height, grid_width, -1)
    similarity = torch.einsum("bld,bhwd->blhw", outputs.text_token_embeds, patch_map)
    expected_map = sparse_token_patch_weights(similarity.flatten(2), 1 / (grid_height * grid_width))
    grounding_map = outputs.token_patch_weights.reshape(2, -1, *outputs.patch_grid_size)
    torch.testing.assert_close(
        grounding_map, expected_map.reshape(2, -1, grid_height, grid_width) * token_mask[..., None, None]
    )


@pytest.mark.parametrize("name,height,width", [("swin", 28, 44), ("resnet", 40, 24), ("dinov2_registers", 40, 24)])
def test_non_square_images_keep_the_backbones_grid(name, height, width):
    model = family_model(name, vision_pooling="mean")
    batch = tiny_batch(batch_size=2, sequence_length=8)
    batch["pixel_values"] = images(height=height, width=width)
    with torch.no_grad():
        outputs = model(**batch, output_token_patch_weights=True)
        reference = backbone_reference(name, model.vision_model, batch["pixel_values"])
    assert outputs.patch_grid_size == reference["grid"] and reference["grid"][0] != reference["grid"][1]
    assert outputs.token_patch_weights.shape[-1] == reference["grid"][0] * reference["grid"][1]
    torch.testing.assert_close(
        outputs.image_patch_embeds, F.normalize(model.visual_projection(reference["patches"]), dim=-1)
    )


@pytest.mark.parametrize("name", BACKBONES)
def test_output_stride_matches_the_backbones_grid(name):
    model = family_model(name)
    with torch.no_grad():
        grid = backbone_reference(name, model.vision_model, images())["grid"]
    stride = vision_output_stride(model.config.vision_config)
    assert (grid[0] * stride, grid[1] * stride) == (IMAGE_SIZE, IMAGE_SIZE)


@pytest.mark.parametrize("name", BACKBONES)
def test_every_trainable_parameter_gets_a_gradient(name):
    model = family_model(name).train()
    model(**tiny_batch(batch_size=3, sequence_length=8), return_loss=True).loss.backward()
    without_gradient = [
        parameter_name
        for parameter_name, parameter in model.named_parameters()
        if parameter.requires_grad and (parameter.grad is None or not parameter.grad.abs().sum() > 0)
    ]
    assert not without_gradient, without_gradient


# --------------------------------------------------------------------------------------------------------------------
# Task heads
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKBONES)
def test_heads_read_the_backbones_pooled_feature_and_grid(name):
    pixel_values = images()
    labels = [
        {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.4, 0.6, 0.3, 0.2]])},
        {"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)},
    ]
    classifier = family_model(name, SistaForImageClassification, num_labels=3)
    segmenter = family_model(name, SistaForSemanticSegmentation, num_labels=2)
    detector = family_model(name, SistaForObjectDetection, num_labels=2)
    with torch.no_grad():
        reference = backbone_reference(name, classifier.vision_model, pixel_values)
        logits = classifier(pixel_values).logits
        torch.testing.assert_close(logits, classifier.classifier(expected_pooled(reference, DEFAULT_POOLING[name])))

        reference = backbone_reference(name, segmenter.vision_model, pixel_values)
        grid_height, grid_width = reference["grid"]
        patch_grid = reference["patches"].transpose(1, 2).reshape(2, -1, grid_height, grid_width)
        masks = torch.randint(0, 2, (2, IMAGE_SIZE, IMAGE_SIZE), generator=torch.Generator().manual_seed(0))
        segmentation = segmenter(pixel_values, labels=masks)
        assert segmentation.logits.shape == (2, 2, IMAGE_SIZE, IMAGE_SIZE) and torch.isfinite(segmentation.loss)
        if name in UNET_SKIPS:  # the default decoder of a tower with stages is the U-Net
            assert segmenter.decoder_type == "unet"
            skips = unet_reference_skips(name, segmenter.vision_model, pixel_values)
            expected = segmenter.decoder(patch_grid, skips, (IMAGE_SIZE, IMAGE_SIZE))
            blocks = segmenter.decoder.blocks
        else:
            assert segmenter.decoder_type == "setr_pup"
            expected = segmenter.decoder(patch_grid, (IMAGE_SIZE, IMAGE_SIZE))
            blocks = segmenter.decoder.stages
        torch.testing.assert_close(segmentation.logits, expected)
        # one 2x block per halving of the backbone's stride, so the decoder reaches the input size by itself
        assert 2 ** len(blocks) * grid_height == IMAGE_SIZE

        reference = backbone_reference(name, detector.vision_model, pixel_values)
        patch_grid = reference["patches"].transpose(1, 2).reshape(2, -1, grid_height, grid_width)
        detection = detector(pixel_values, labels=labels)
        factor = detector.config.detection_upsample_factor
        assert detection.heatmap_logits.shape == (2, 2, grid_height * factor, grid_width * factor)
        torch.testing.assert_close(detection.heatmap_logits, detector.detection_head(patch_grid)[0])
        assert torch.isfinite(detection.loss)


# --------------------------------------------------------------------------------------------------------------------
# Segmentation: the U-Net over the stages of ResNet, ConvNeXt and Swin
# --------------------------------------------------------------------------------------------------------------------

# the hidden states each U-Net family's skips are, coarse to fine, as the families document their outputs: ResNet's and
# ConvNeXt's stage 1 (its stride-4 map replaces the stem's of the same size), Swin's merged stage 1 and its stem
UNET_SKIPS = {"resnet": ("hidden_states", [1]), "convnext": ("hidden_states", [1]), "swin": ("reshaped_hidden_states", [1, 0])}


def unet_reference_skips(name: str, vision_model, pixel_values) -> list[torch.Tensor]:
    field, indices = UNET_SKIPS[name]
    states = vision_model(pixel_values=pixel_values, output_hidden_states=True)[field]
    return [states[index] for index in indices]


@pytest.mark.parametrize("name", UNET_SKIPS)
def test_unet_decoder_reads_every_stage(name):
    segmenter = family_model(name, SistaForSemanticSegmentation, num_labels=1)
    pixel_values = images()
    with torch.no_grad():
        reference = backbone_reference(name, segmenter.vision_model, pixel_values)
        patch_grid = reference["patches"].transpose(1, 2).reshape(2, -1, *reference["grid"])
        skips = unet_reference_skips(name, segmenter.vision_model, pixel_values)
        assert [skip.shape[1] for skip in skips] == segmenter.decoder.skip_channels
        logits = segmenter(pixel_values).logits
        torch.testing.assert_close(logits, segmenter.decoder(patch_grid, skips, (IMAGE_SIZE, IMAGE_SIZE)))
        # each stage's map, the finest included, moves the logits: the decoder reads it, not only the last grid
        for index in range(len(skips)):
            changed = [skip + (2.0 if position == index else 0.0) * torch.randn_like(skip)
                       for position, skip in enumerate(skips)]
            moved = segmenter.decoder(patch_grid, changed, (IMAGE_SIZE, IMAGE_SIZE))
            assert (moved - logits).abs().max() > 1e-3, f"skip {index} of {name} does not reach the logits"


@pytest.mark.parametrize("name", ["resnet", "swin", "vit"])
def test_segmentation_decoder_round_trips_through_save_and_load(tmp_path, name):
    segmenter = family_model(name, SistaForSemanticSegmentation, num_labels=1)
    with torch.no_grad():  # a decoder no fresh initialisation could reproduce
        for parameter in segmenter.decoder.parameters():
            parameter.add_(0.1)
    segmenter.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["segmentation_decoder"] == "auto"
    loaded = SistaForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert loaded.decoder_type == segmenter.decoder_type == ("setr_pup" if name == "vit" else "unet")
    pixel_values = images()
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values).logits, segmenter(pixel_values).logits)


def test_loading_a_head_with_the_other_decoder_is_refused(tmp_path):
    # 128 channels give both decoders a 32-channel classifier: only the names of the decoder's weights differ
    family_model(
        "resnet", SistaForSemanticSegmentation, num_labels=1, segmentation_decoder="setr_pup", decoder_hidden_size=128
    ).save_pretrained(tmp_path)
    assert SistaForSemanticSegmentation.from_pretrained(tmp_path).decoder_type == "setr_pup"
    with pytest.raises(ValueError, match="segmentation_decoder"):
        SistaForSemanticSegmentation.from_pretrained(tmp_path, segmentation_decoder="unet")


@pytest.mark.parametrize("name", UNET_SKIPS)
def test_frozen_encoder_gets_no_gradient_under_the_unet(name):
    segmenter = family_model(name, SistaForSemanticSegmentation, num_labels=1, freeze_encoder=True).train()
    masks = torch.randint(0, 2, (2, IMAGE_SIZE, IMAGE_SIZE), generator=torch.Generator().manual_seed(0))
    segmenter(images(), labels=masks).loss.backward()
    assert all(parameter.grad is None for parameter in segmenter.vision_model.parameters())
    assert all(parameter.grad is not None and parameter.grad.abs().sum() > 0
               for parameter in segmenter.decoder.parameters())


def test_segmentation_decoder_field_is_checked_and_resolved():
    with pytest.raises(ValueError, match="segmentation_decoder"):
        family_config("resnet", segmentation_decoder="fpn")
    with pytest.raises(ValueError, match=r"segmentation_decoder='unet'.*'vit'"):
        family_config("vit", segmentation_decoder="unet")
    assert family_model("convnext", SistaForSemanticSegmentation, segmentation_decoder="setr_pup").decoder_type == (
        "setr_pup"
    )


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints: from a saved backbone, save/load, Auto classes with remote code
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert")
    torch.manual_seed(2)
    BertModel(tiny_text_config(), add_pooling_layer=False).save_pretrained(path)
    return path


@pytest.mark.parametrize("name,pooling", [(name, DEFAULT_POOLING[name]) for name in BACKBONES] + [("beit", "mean")])
def test_from_vision_text_pretrained_loads_a_saved_backbone(tmp_path, text_checkpoint, name, pooling):
    torch.manual_seed(3)
    backbone = AutoModel.from_config(BACKBONES[name][0]()).eval()
    with torch.no_grad():  # weights no fresh initialisation could reproduce
        for parameter in backbone.parameters():
            parameter.add_(0.25)
    backbone.save_pretrained(tmp_path / "vision")

    model = SistaModel.from_vision_text_pretrained(
        str(tmp_path / "vision"), str(text_checkpoint), projection_dim=16, vision_pooling=pooling
    ).eval()
    saved = backbone.state_dict()
    loaded = model.vision_model.state_dict()
    assert loaded and all(torch.equal(value, saved[key]) for key, value in loaded.items())
    # the pooler travels exactly when SISTA pools with it
    assert any(key.startswith("pooler.") for key in loaded) == (
        pooling == "pooler" and any(key.startswith("pooler.") for key in saved)
    )
    batch = tiny_batch(batch_size=2, sequence_length=8)
    with torch.no_grad():
        outputs = model(**batch, return_loss=True)
        reference = backbone_reference(name, backbone, batch["pixel_values"])
    torch.testing.assert_close(
        outputs.image_embeds, F.normalize(model.visual_projection(expected_pooled(reference, pooling)), dim=-1)
    )
    torch.testing.assert_close(
        outputs.image_patch_embeds, F.normalize(model.visual_projection(reference["patches"]), dim=-1)
    )


@pytest.mark.parametrize("name", BACKBONES)
def test_save_load_round_trip(tmp_path, name):
    model = family_model(name)
    model.save_pretrained(tmp_path)
    loaded = SistaModel.from_pretrained(tmp_path).eval()
    assert type(loaded.config.vision_config) is type(model.config.vision_config)
    saved_vision_config = json.loads((tmp_path / "config.json").read_text())["vision_config"]
    assert saved_vision_config["model_type"] == model.config.vision_config.model_type
    assert all(parameter.requires_grad for name, parameter in loaded.named_parameters() if "mask_token" not in name)
    assert not any(parameter.requires_grad for name, parameter in loaded.named_parameters() if "mask_token" in name)
    batch = tiny_batch(batch_size=2, sequence_length=8)
    with torch.no_grad():
        expected, got = model(**batch, return_loss=True), loaded(**batch, return_loss=True)
    for field in ("loss", "image_embeds", "image_patch_embeds", "patch_grid_size"):
        assert expected[field] == got[field] if field == "patch_grid_size" else torch.equal(expected[field], got[field])


def test_auto_classes_with_remote_code_in_a_fresh_process(tmp_path):
    batch = tiny_batch(batch_size=2, sequence_length=8)
    torch.save(batch, tmp_path / "batch.pt")
    expected = {}
    for name in BACKBONES:
        model = family_model(name)
        model.save_pretrained(tmp_path / name / "AutoModel")
        with torch.no_grad():
            expected[(name, "AutoModel")] = model(**batch).image_patch_embeds
        for head_class, auto_class in zip(HEADS, HEAD_AUTO_CLASSES):
            head = family_model(name, head_class, num_labels=2)
            head.save_pretrained(tmp_path / name / auto_class)
            with torch.no_grad():
                head_outputs = head(batch["pixel_values"])
            expected[(name, auto_class)] = head_outputs.get("logits", head_outputs.get("heatmap_logits"))
    script = f"""
import torch, transformers
batch = torch.load({str(tmp_path / "batch.pt")!r})
results = {{}}
for name, auto_class in {sorted(expected)!r}:
    model = getattr(transformers, auto_class).from_pretrained({str(tmp_path)!r} + f"/{{name}}/{{auto_class}}",
                                                             trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        if auto_class == "AutoModel":
            results[(name, auto_class)] = model(**batch).image_patch_embeds
        else:
            outputs = model(batch["pixel_values"])
            results[(name, auto_class)] = outputs.get("logits", outputs.get("heatmap_logits"))
torch.save(results, {str(tmp_path / "results.pt")!r})
"""
    # the same number of threads as here: convolutions may sum in another order with another count
    threads = str(torch.get_num_threads())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env["OMP_NUM_THREADS"] = threads
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "results.pt")
    assert remote.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(remote[key], value), key


# --------------------------------------------------------------------------------------------------------------------
# Backbones that cannot give what SISTA needs
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WITHOUT_CLASS_TOKEN)
def test_cls_pooling_without_a_class_token_names_the_backbone(name):
    model = family_model(name, vision_pooling="cls")
    with pytest.raises(ValueError, match=rf"vision_pooling='cls'.*{name}"):
        model(**tiny_batch(batch_size=2, sequence_length=8))
    head = family_model(name, SistaForImageClassification, vision_pooling="cls", num_labels=2)
    with pytest.raises(ValueError, match=rf"vision_pooling='cls'.*{name}"):
        head(images())


def test_backbone_without_a_patch_grid_is_named():
    # PVT returns its last stage as tokens behind a class token, and its config has per-stage patch sizes only
    pvt = PvtConfig(
        image_size=IMAGE_SIZE,
        num_encoder_blocks=2,
        depths=[1, 1],
        sequence_reduction_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[4, 2],
        strides=[4, 2],
        num_attention_heads=[1, 1],
        mlp_ratios=[2, 2],
    )
    config = SistaConfig.from_vision_text_configs(pvt, tiny_text_config(), projection_dim=16, vision_pooling="mean")
    model = SistaModel(config)
    with pytest.raises(ValueError, match=r"'pvt'.*`patch_size`"):
        model(**tiny_batch(batch_size=2, sequence_length=8))


def test_pooler_pooling_without_a_pooler_is_named(tmp_path, text_checkpoint):
    AutoModel.from_config(BACKBONES["vit"][0]()).save_pretrained(tmp_path)
    model = SistaModel.from_vision_text_pretrained(
        str(tmp_path), str(text_checkpoint), vision_kwargs={"add_pooling_layer": False}, vision_pooling="pooler"
    )
    with pytest.raises(ValueError, match=r"vision_pooling='pooler'.*pooler_output.*'vit'"):
        model(**tiny_batch(batch_size=2, sequence_length=8))


def test_config_accepts_pooler_for_images_only():
    assert SistaConfig(vision_pooling="pooler").vision_pooling == "pooler"
    with pytest.raises(ValueError, match="text_pooling"):
        SistaConfig(text_pooling="pooler")
