"""SistaConfig and SistaModel: config validation, forward values, round trips, remote code, distributed SIA."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers.models.clip.modeling_clip import image_text_contrastive_loss as clip_loss

from configuration_sista import SistaConfig
from conftest import run_two_processes, tiny_batch, tiny_sista_config, without_dropout
from modeling_sista import SistaModel, sia_loss, sta_loss



def tiny_model(**config_kwargs) -> SistaModel:
    torch.manual_seed(0)
    return SistaModel(tiny_sista_config(**config_kwargs)).eval()


# --------------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value",
    [
        ("sia_weight", -0.1),
        ("sta_weight", -1.0),
        ("sia_mode", "drop"),
        ("sia_soft_target", "gaussian"),
        ("sia_similarity_source", "images"),
        ("sia_threshold", -1.5),
        ("sta_sparsity_threshold", 1.5),
        ("sta_temperature", 0.0),
        ("projection_dim", 0),
        ("vision_pooling", "max"),
    ],
)
def test_config_rejects_invalid_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SistaConfig(**{field: value})


def test_a_threshold_above_one_is_an_error_that_names_sia_mode_off():
    """The old form of "false-negative removal off" no longer switches the mode silently."""
    with pytest.raises(ValueError, match=r"`sia_threshold` must be <= 1 .* set `sia_mode=\"off\"` instead"):
        SistaConfig(sia_threshold=1.01)
    assert SistaConfig(sia_mode="off", sia_threshold=1.0).sia_mode == "off"


def test_config_rejects_both_objectives_off():
    with pytest.raises(ValueError, match="sia_weight"):
        SistaConfig(sia_weight=0.0, sta_weight=0.0)


def test_config_round_trip_keeps_sub_configs(tmp_path):
    config = tiny_sista_config(sia_mode="soft", sia_threshold=0.8, sta_sparsity_threshold=0.2)
    config.save_pretrained(tmp_path)
    loaded = SistaConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.vision_config.patch_size == 8 and loaded.text_config.hidden_size == 32
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"]["AutoConfig"] == "configuration_sista.SistaConfig"


def test_default_config_builds_a_small_vit_and_bert():
    config = SistaConfig()
    assert (config.vision_config.model_type, config.text_config.model_type) == ("vit", "bert")
    assert config.vision_config.hidden_size == config.text_config.hidden_size == 256


# --------------------------------------------------------------------------------------------------------------------
# Forward values
# --------------------------------------------------------------------------------------------------------------------


def test_forward_composes_the_loss_functions():
    model = tiny_model(sia_weight=0.7, sta_weight=0.3)
    batch = tiny_batch()
    outputs = model(**batch, return_loss=True, output_token_patch_weights=True)

    assert outputs.image_embeds.shape == (4, 16) and outputs.image_patch_embeds.shape == (4, 16, 16)
    torch.testing.assert_close(outputs.image_embeds.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(outputs.text_token_embeds.norm(dim=-1), torch.ones(4, 10))
    torch.testing.assert_close(outputs.logits_per_image, outputs.logits_per_text.t())

    # independent recomputation from the backbones' raw outputs
    hidden = model.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state
    image_embeds = F.normalize(model.visual_projection(hidden[:, 0]), dim=-1)
    patch_embeds = F.normalize(model.visual_projection(hidden[:, 1:]), dim=-1)
    tokens = model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    text_embeds = F.normalize(model.text_projection(tokens[:, 0]), dim=-1)
    token_embeds = F.normalize(model.text_projection(tokens), dim=-1)
    logits_per_image = model.logit_scale.exp() * image_embeds @ text_embeds.t()
    torch.testing.assert_close(outputs.logits_per_image, logits_per_image)

    report_embeds = F.normalize(batch["report_embeds"], dim=-1)
    expected_sia = sia_loss(logits_per_image, logits_per_image.t(), report_embeds @ report_embeds.t(), 0.9)
    token_mask = batch["attention_mask"].bool() & (batch["input_ids"] > 4)
    expected_sta, weights = sta_loss(token_embeds, patch_embeds, token_mask, None, 0.1)
    torch.testing.assert_close(outputs.loss_sia, expected_sia)
    torch.testing.assert_close(outputs.loss_sta, expected_sta)
    torch.testing.assert_close(outputs.loss, 0.7 * expected_sia + 0.3 * expected_sta)
    torch.testing.assert_close(outputs.token_patch_weights, weights * token_mask[..., None])
    assert (outputs.token_patch_weights[~token_mask] == 0).all()


def test_clip_configuration_equals_transformers_clip_loss():
    model = tiny_model(sia_mode="off", sta_weight=0.0)
    batch = tiny_batch()
    batch.pop("report_embeds")
    outputs = model(**batch, return_loss=True)
    assert outputs.loss_sta is None
    torch.testing.assert_close(outputs.loss, clip_loss(outputs.logits_per_text), rtol=0, atol=1e-6)


def test_online_text_similarity_source_uses_detached_report_embeddings():
    model = tiny_model(sia_similarity_source="text_embeds", sia_threshold=0.0, sta_weight=0.0)
    batch = tiny_batch()
    batch.pop("report_embeds")
    outputs = model(**batch, return_loss=True)
    similarity = outputs.text_embeds @ outputs.text_embeds.t()
    expected = sia_loss(outputs.logits_per_image, outputs.logits_per_text, similarity, 0.0)
    torch.testing.assert_close(outputs.loss_sia, expected)


def test_zero_shot_shapes_allow_different_batch_sizes():
    model = tiny_model()
    batch = tiny_batch(batch_size=5)
    outputs = model(input_ids=batch["input_ids"][:3], pixel_values=batch["pixel_values"])
    assert outputs.logits_per_image.shape == (5, 3) and outputs.loss is None


def test_get_features_match_forward_embeddings():
    model = tiny_model()
    batch = tiny_batch()
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"])
    image_features = model.get_image_features(batch["pixel_values"]).pooler_output
    text_features = model.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
    torch.testing.assert_close(F.normalize(image_features, dim=-1), outputs.image_embeds)
    torch.testing.assert_close(F.normalize(text_features, dim=-1), outputs.text_embeds)


def test_mean_pooling_uses_only_attended_tokens():
    model = tiny_model(text_pooling="mean", vision_pooling="mean")
    batch = tiny_batch()
    features = model.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
    tokens = model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    expected = torch.stack(
        [tokens[i, batch["attention_mask"][i].bool()].mean(dim=0) for i in range(tokens.shape[0])]
    )
    torch.testing.assert_close(features, model.text_projection(expected))


def test_every_parameter_gets_a_gradient():
    model = tiny_model().train()
    model(**tiny_batch(), return_loss=True).loss.backward()
    missing = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert not missing, f"parameters without gradient (DDP would fail): {missing}"


def test_without_sia_the_logit_scale_is_frozen_and_every_trainable_parameter_gets_a_gradient():
    model = tiny_model(sia_weight=0.0).train()
    outputs = model(**tiny_batch(), return_loss=True)
    assert outputs.loss_sia is None
    outputs.loss.backward()
    assert not model.logit_scale.requires_grad
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def test_gradient_checkpointing_passes_through_to_the_backbones():
    batch = tiny_batch()

    def loss_and_grads(gradient_checkpointing):
        model = without_dropout(tiny_model().train())
        if gradient_checkpointing:
            model.activation_checkpointing_enable()
            for backbone in (model.vision_model, model.text_model):
                assert any(getattr(module, "gradient_checkpointing", False) for module in backbone.modules())
        loss = model(**batch, return_loss=True).loss
        loss.backward()
        return loss, {name: parameter.grad for name, parameter in model.named_parameters()}

    reference_loss, reference_grads = loss_and_grads(False)
    loss, grads = loss_and_grads(True)
    torch.testing.assert_close(loss, reference_loss)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference_grads[name], msg=name)


# --------------------------------------------------------------------------------------------------------------------
# Bad input and edge cases
# --------------------------------------------------------------------------------------------------------------------


def test_mismatched_batch_sizes_with_loss_name_both_inputs():
    model = tiny_model()
    batch = tiny_batch()
    with pytest.raises(ValueError, match=r"pixel_values.*input_ids.*4 images and 3 reports"):
        model(
            input_ids=batch["input_ids"][:3],
            pixel_values=batch["pixel_values"],
            report_embeds=batch["report_embeds"][:3],
            return_loss=True,
        )


def test_missing_inputs_are_named():
    model = tiny_model()
    batch = tiny_batch()
    with pytest.raises(ValueError, match="pixel_values"):
        model(input_ids=batch["input_ids"])
    with pytest.raises(ValueError, match="input_ids"):
        model(pixel_values=batch["pixel_values"])


def test_wrong_number_of_channels_is_named():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"pixel_values.*\(batch_size, 3, height, width\).*\(2, 1, 32, 32\)"):
        model.get_image_features(torch.zeros(2, 1, 32, 32))


def test_report_embeds_of_wrong_shape_is_named():
    model = tiny_model()
    batch = tiny_batch()
    batch["report_embeds"] = batch["report_embeds"][:2]
    with pytest.raises(ValueError, match=r"report_embeds.*\(4, dim\).*\(2, 8\)"):
        model(**batch, return_loss=True)


def test_missing_report_embeds_for_sia_is_named():
    model = tiny_model()
    batch = tiny_batch()
    batch.pop("report_embeds")
    with pytest.raises(ValueError, match="report_embeds"):
        model(**batch, return_loss=True)


def test_all_padding_report_is_rejected():
    model = tiny_model()
    batch = tiny_batch()
    batch["attention_mask"][2] = 0
    with pytest.raises(ValueError, match=r"attention_mask.*\[2\]"):
        model(**batch, return_loss=True)


def test_batch_size_one_has_zero_sia_and_finite_sta():
    outputs = tiny_model()(**tiny_batch(batch_size=1), return_loss=True)
    assert outputs.loss_sia.item() == 0.0 and torch.isfinite(outputs.loss_sta)


def test_identical_reports_remove_every_negative():
    batch = tiny_batch()
    batch["report_embeds"] = batch["report_embeds"][:1].expand(4, -1).clone()
    eliminate = tiny_model()(**batch, return_loss=True)
    assert eliminate.loss_sia.item() == 0.0
    soft = tiny_model(sia_mode="soft")(**batch, return_loss=True)
    expected = -soft.logits_per_image.log_softmax(dim=1).mean() / 2 - soft.logits_per_text.log_softmax(dim=1).mean() / 2
    torch.testing.assert_close(soft.loss_sia, expected)


def test_bf16_autocast_gives_finite_losses():
    model = tiny_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(**tiny_batch(), return_loss=True, output_token_patch_weights=True)
    assert torch.isfinite(outputs.loss) and torch.isfinite(outputs.token_patch_weights).all()


# --------------------------------------------------------------------------------------------------------------------
# Save / load, Auto classes, remote code
# --------------------------------------------------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = tiny_model()
    batch = tiny_batch()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_sista.SistaModel"
    assert config["auto_map"]["AutoModelForZeroShotImageClassification"] == "modeling_sista.SistaModel"
    for module in ("configuration_sista.py", "modeling_sista.py"):
        assert (tmp_path / module).exists()
    loaded = SistaModel.from_pretrained(tmp_path).eval()
    expected, got = model(**batch, return_loss=True), loaded(**batch, return_loss=True)
    for name in ("loss", "logits_per_image", "image_patch_embeds", "text_token_embeds"):
        assert torch.equal(expected[name], got[name]), name


def test_automodel_with_remote_code_in_a_fresh_process(tmp_path):
    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    batch = tiny_batch()
    torch.save(batch, tmp_path / "batch.pt")
    script = f"""
import torch
from transformers import AutoModel, AutoConfig
config = AutoConfig.from_pretrained({str(model_dir)!r}, trust_remote_code=True)
model = AutoModel.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
assert type(model).__name__ == "SistaModel" and type(config).__name__ == "SistaConfig"
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    outputs = model(**torch.load({str(tmp_path / "batch.pt")!r}), return_loss=True)
torch.save({{"loss": outputs.loss, "logits": outputs.logits_per_image}}, {str(tmp_path / "out.pt")!r})
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        local = tiny_model()(**batch, return_loss=True)
    assert torch.equal(remote["loss"], local.loss) and torch.equal(remote["logits"], local.logits_per_image)


# --------------------------------------------------------------------------------------------------------------------
# Distributed SIA: 2 processes (gloo) against one process holding the global batch
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sia_mode", ["eliminate", "soft"])
def test_two_process_sia_equals_one_process(tmp_path, sia_mode):
    config_kwargs = {"sia_mode": sia_mode, "sia_threshold": 0.3}
    global_batch = tiny_batch(batch_size=8, report_dim=4, seed=3)
    # a coarse report space so that some pairs are false negatives across the two processes
    global_batch["report_embeds"] = global_batch["report_embeds"].sign()
    distributed = run_two_processes(tmp_path, {"batch": global_batch, "config_kwargs": config_kwargs}, timeout=240)

    model = without_dropout(tiny_model(**config_kwargs).train())
    outputs = model(**global_batch, return_loss=True)
    outputs.loss.backward()
    flagged_across = (global_batch["report_embeds"][:4] @ global_batch["report_embeds"][4:].t()).ge(0.3 * 4).any()
    assert flagged_across, "the case must have false negatives across processes"
    torch.testing.assert_close(distributed["loss_sia"], outputs.loss_sia.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(distributed["loss"], outputs.loss.detach(), rtol=1e-5, atol=1e-6)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(distributed["grads"][name], parameter.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_loading_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match="not a SISTA checkpoint.*'bert'"):
        SistaModel.from_pretrained(tmp_path)


def test_all_finite_agrees_with_the_elementwise_check():
    from modeling_sista import all_finite

    big = torch.finfo(torch.float16).max
    cases = [
        torch.randn(3, 4),
        torch.tensor([1.0, float("nan")]),
        torch.tensor([float("inf"), 2.0]),
        torch.tensor([float("inf"), float("-inf")]),  # sums to NaN
        torch.full((8,), big, dtype=torch.float16),  # finite values whose sum overflows
        torch.tensor([3.0e38, 3.0e38, float("nan")]),  # an overflow and a NaN
        torch.zeros(0),
    ]
    for tensor in cases:
        assert all_finite(tensor) == bool(torch.isfinite(tensor).all()), tensor
