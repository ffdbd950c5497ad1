"""Task heads: forward values against independent computations, losses, box coding, NMS, loading and Auto classes."""

import json
import math
import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel, Trainer, TrainingArguments

from configuration_sista import SistaConfig
from conftest import tiny_sista_config
from modeling_sista import (
    SistaForImageClassification,
    SistaForObjectDetection,
    SistaForSemanticSegmentation,
    SistaModel,
    batched_nms,
    box_iou,
    center_to_corners,
    decode_detections,
    encode_detection_targets,
    focal_heatmap_loss,
    segmentation_loss,
)


HEADS = (SistaForImageClassification, SistaForSemanticSegmentation, SistaForObjectDetection)


def tiny_head(model_class, **config_kwargs):
    config_kwargs.setdefault("decoder_hidden_size", 32)
    torch.manual_seed(0)
    return model_class(tiny_sista_config(**config_kwargs)).eval()


def pixels(batch_size=2, seed=0, size=32):
    return torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(seed))


def detection_labels():
    return [
        {"class_labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.25], [0.7, 0.6, 0.3, 0.4]])},
        {"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)},
    ]


# --------------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value",
    [
        ("decoder_hidden_size", 0),
        ("detection_upsample_factor", 3),
        ("detection_nms_iou_threshold", 0.0),
        ("classifier_dropout", 1.0),
        ("segmentation_dice_weight", -1.0),
        ("detection_max_detections", 0),
        ("problem_type", "ranking"),
    ],
)
def test_config_rejects_invalid_head_fields(field, value):
    with pytest.raises(ValueError, match=field):
        SistaConfig(**{field: value})


# --------------------------------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vision_pooling", ["cls", "mean"])
def test_classification_logits_are_a_linear_map_of_the_pooled_feature(vision_pooling):
    model = tiny_head(SistaForImageClassification, num_labels=4, vision_pooling=vision_pooling)
    pixel_values = pixels()
    hidden = model.vision_model(pixel_values=pixel_values).last_hidden_state
    pooled = hidden[:, 0] if vision_pooling == "cls" else hidden[:, 1:].mean(dim=1)
    expected = pooled @ model.classifier.weight.t() + model.classifier.bias
    torch.testing.assert_close(model(pixel_values).logits, expected)


def test_classification_losses_match_torch():
    pixel_values = pixels(3)
    multi = tiny_head(SistaForImageClassification, num_labels=4, problem_type="multi_label_classification")
    labels = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0]]).float()
    outputs = multi(pixel_values, labels=labels)
    torch.testing.assert_close(outputs.loss, F.binary_cross_entropy_with_logits(outputs.logits, labels))

    single = tiny_head(SistaForImageClassification, num_labels=3)  # problem type inferred from integer labels
    labels = torch.tensor([2, 0, 1])
    outputs = single(pixel_values, labels=labels)
    torch.testing.assert_close(outputs.loss, F.cross_entropy(outputs.logits, labels))


def test_classification_rejects_bad_labels():
    model = tiny_head(SistaForImageClassification, num_labels=3)
    with pytest.raises(ValueError, match=r"labels.*\[0, 2\].*num_labels=3"):
        model(pixels(), labels=torch.tensor([0, 3]))
    multi = tiny_head(SistaForImageClassification, num_labels=3, problem_type="multi_label_classification")
    with pytest.raises(ValueError, match=r"multi-hot of shape \(2, 3\)"):
        multi(pixels(), labels=torch.ones(2, 4))


@pytest.mark.parametrize("model_class", HEADS)
def test_bad_images_are_named(model_class):
    model = tiny_head(model_class)
    with pytest.raises(ValueError, match="smaller than one patch"):
        model(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\(batch_size, 3, height, width\).*\(2, 1, 32, 32\)"):
        model(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="pixel_values"):
        model()


def test_frozen_encoder_gets_no_gradient_and_stays_unchanged_through_a_trainer_step(tmp_path):
    model = tiny_head(SistaForImageClassification, num_labels=2, freeze_encoder=True).train()
    assert not model.vision_model.training, "a frozen encoder stays in eval mode"
    encoder_before = {name: value.clone() for name, value in model.vision_model.state_dict().items()}
    head_before = model.classifier.weight.clone()
    data = [{"pixel_values": pixels(1, seed)[0], "labels": torch.tensor(seed % 2)} for seed in range(4)]
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, learning_rate=0.1, report_to="none",
        save_strategy="no", use_cpu=True,
    )
    Trainer(model=model, args=args, train_dataset=data).train()
    assert all(parameter.grad is None for parameter in model.vision_model.parameters())
    for name, value in model.vision_model.state_dict().items():
        assert torch.equal(value, encoder_before[name]), name
    assert not torch.equal(model.classifier.weight, head_before), "the head must train"


@pytest.mark.parametrize("trainer_name", ["resume", "best"])
def test_checkpoint_trainer_reloads_every_weight_of_a_checkpoint(tmp_path, trainer_name):
    from safetensors.torch import load_file

    from sista_examples.training.trainer import CheckpointTrainer

    model = tiny_head(SistaForImageClassification, num_labels=2).train()
    data = [{"pixel_values": pixels(1, seed)[0], "labels": torch.tensor(seed % 2)} for seed in range(4)]
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, save_steps=1, per_device_train_batch_size=4, learning_rate=0.1,
        report_to="none", use_cpu=True,
    )
    trainer = CheckpointTrainer(model=model, args=args, train_dataset=data)
    trainer.train()
    checkpoint = tmp_path / "checkpoint-1"
    expected = SistaForImageClassification.from_pretrained(checkpoint).state_dict()
    # the vision tower moved after step 1, and its file names differ from the module's (legacy ViT names), so a
    # load by tensor name would leave it where it is
    assert not torch.equal(model.state_dict()["vision_model.embeddings.patch_embeddings.projection.weight"],
                           expected["vision_model.embeddings.patch_embeddings.projection.weight"])
    assert set(load_file(checkpoint / "model.safetensors")) != set(expected)
    if trainer_name == "resume":
        trainer._load_from_checkpoint(str(checkpoint))
    else:
        trainer.state.best_model_checkpoint = str(checkpoint)
        trainer._load_best_model()
    for name, value in model.state_dict().items():
        assert torch.equal(value, expected[name]), name


# --------------------------------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------------------------------


def reference_dice_loss(probabilities, targets, smooth=1.0):
    return 1 - (2 * (probabilities * targets).sum() + smooth) / (probabilities.sum() + targets.sum() + smooth)


def test_binary_segmentation_logits_at_input_size_and_loss_is_bce_plus_dice():
    model = tiny_head(SistaForSemanticSegmentation, num_labels=1)
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[0, 4:12, 10:20] = 1
    outputs = model(pixels(), labels=labels)
    assert outputs.logits.shape == (2, 1, 32, 32)
    logits = outputs.logits[:, 0]
    probabilities = torch.sigmoid(logits)
    bce = -(labels * torch.log(probabilities) + (1 - labels) * torch.log(1 - probabilities)).mean()
    torch.testing.assert_close(outputs.loss, bce + reference_dice_loss(probabilities, labels.float()))


def test_multiclass_segmentation_loss_is_ce_plus_mean_dice_with_ignored_pixels():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 8, 8, generator=generator)
    labels = torch.randint(0, 3, (2, 8, 8), generator=generator)
    labels[0, 0] = -100
    valid = labels != -100
    probabilities = logits.softmax(dim=1)
    ce = -torch.log(probabilities.permute(0, 2, 3, 1)[valid].gather(1, labels[valid][:, None])).mean()
    dice = torch.stack(
        [reference_dice_loss(probabilities[:, c][valid], (labels[valid] == c).float()) for c in range(3)]
    ).mean()
    torch.testing.assert_close(segmentation_loss(logits, labels, ignore_index=-100), ce + dice)


def test_binary_mask_logits_start_at_the_focal_prior():
    """A fresh binary head predicts lesion probability 0.01 on average; a multi-class head keeps the default init."""
    model = tiny_head(SistaForSemanticSegmentation, num_labels=1)
    torch.testing.assert_close(model.decoder.classifier.bias, torch.full((1,), -math.log(99)))
    with torch.no_grad():
        probabilities = model(pixels()).logits.sigmoid()
    assert 0.002 < probabilities.mean().item() < 0.05
    assert tiny_head(SistaForSemanticSegmentation, num_labels=3).decoder.classifier.bias.abs().max() < 1


def test_segmentation_rejects_masks_out_of_range():
    model = tiny_head(SistaForSemanticSegmentation, num_labels=1)
    with pytest.raises(ValueError, match="divided by 255"):
        model(pixels(), labels=torch.full((2, 32, 32), 255))
    with pytest.raises(ValueError, match=r"shape \(2, 32, 32\)"):
        model(pixels(), labels=torch.zeros(2, 16, 16, dtype=torch.long))


# --------------------------------------------------------------------------------------------------------------------
# Detection: target coding, NMS, loss, post-processing
# --------------------------------------------------------------------------------------------------------------------


def test_detection_targets_decode_back_to_the_ground_truth_boxes():
    labels = [
        {"class_labels": torch.tensor([0, 1, 1]),
         "boxes": torch.tensor([[0.21, 0.33, 0.2, 0.1], [0.7, 0.62, 0.35, 0.42], [0.52, 0.15, 0.08, 0.06]])},
        {"class_labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.9, 0.8]])},
    ]
    targets = encode_detection_targets(labels, num_classes=3, grid_height=16, grid_width=16)
    assert targets["regression_mask"].sum() == 4
    heatmap_logits = torch.logit(targets["heatmap"].clamp(1e-4, 1 - 1e-4))
    scores, classes, boxes = decode_detections(heatmap_logits, targets["sizes"], targets["offsets"], max_detections=10)
    for index, target in enumerate(labels):
        found = scores[index] > 0.99
        assert found.sum() == len(target["boxes"])
        order = torch.argsort(boxes[index][found][:, 0])
        expected = torch.argsort(target["boxes"][:, 0])
        torch.testing.assert_close(boxes[index][found][order], target["boxes"][expected], atol=1e-5, rtol=0)
        assert torch.equal(classes[index][found][order], target["class_labels"][expected])


def naive_nms(boxes, scores, classes, threshold):
    def iou(first, second):
        return float(box_iou(boxes[first : first + 1], boxes[second : second + 1]))

    kept = []
    for index in sorted(range(len(scores)), key=lambda i: -float(scores[i])):
        if all(int(classes[index]) != int(classes[other]) or iou(index, other) <= threshold for other in kept):
            kept.append(index)
    return kept


@pytest.mark.parametrize("seed", range(5))
def test_batched_nms_matches_a_naive_loop(seed):
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(40, 2, generator=generator) * 50
    boxes = torch.cat([corners, corners + 5 + torch.rand(40, 2, generator=generator) * 20], dim=1)
    scores = torch.rand(40, generator=generator)
    classes = torch.randint(0, 3, (40,), generator=generator)
    assert batched_nms(boxes, scores, classes, 0.3).tolist() == naive_nms(boxes, scores, classes, 0.3)
    assert batched_nms(boxes[:0], scores[:0], classes[:0], 0.3).numel() == 0


def test_focal_loss_matches_the_centernet_formula():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 2, 5, 5, generator=generator)
    target = torch.rand(1, 2, 5, 5, generator=generator) * 0.9
    target[0, 0, 2, 2] = target[0, 1, 1, 3] = 1.0
    p = logits.sigmoid()
    positive = -((1 - p) ** 2 * torch.log(p))[target == 1].sum()
    negative = -((1 - target) ** 4 * p**2 * torch.log(1 - p))[target < 1].sum()
    torch.testing.assert_close(focal_heatmap_loss(logits, target), (positive + negative) / 2)


def test_detection_forward_loss_and_post_processing():
    model = tiny_head(SistaForObjectDetection, num_labels=3)
    outputs = model(pixels(), labels=detection_labels())
    assert outputs.heatmap_logits.shape == (2, 3, 8, 8)  # 32 px / patch 8 × upsample 2
    assert set(outputs.loss_dict) == {"loss_heatmap", "loss_size", "loss_offset"} and torch.isfinite(outputs.loss)
    terms = outputs.loss_dict
    expected = terms["loss_heatmap"] + 0.1 * terms["loss_size"] + terms["loss_offset"]
    torch.testing.assert_close(outputs.loss, expected)
    outputs.loss.backward()

    results = model.post_process_object_detection(outputs, threshold=-1.0, target_sizes=[(64, 128), (64, 128)],
                                                  nms_iou_threshold=1.0)
    expected_boxes = center_to_corners(outputs.pred_boxes[0]) * torch.tensor([128, 64, 128, 64])
    torch.testing.assert_close(results[0]["boxes"], expected_boxes)
    assert torch.equal(results[0]["labels"], outputs.pred_class_labels[0])
    assert (results[0]["scores"][:-1] >= results[0]["scores"][1:]).all()
    with_nms = model.post_process_object_detection(outputs, threshold=0.0, target_sizes=[(64, 128)] * 2)
    assert len(with_nms[0]["scores"]) <= len(results[0]["scores"])


def test_heatmap_bias_starts_at_the_focal_prior():
    model = tiny_head(SistaForObjectDetection, num_labels=3)
    torch.testing.assert_close(model.detection_head.heatmap[2].bias, torch.full((3,), -math.log(99)))


def test_detection_rejects_bad_labels():
    model = tiny_head(SistaForObjectDetection, num_labels=3)
    labels = detection_labels()
    labels[0]["class_labels"] = torch.tensor([0, 3])
    with pytest.raises(ValueError, match=r"class_labels.*\[0, 2\]"):
        model(pixels(), labels=labels)
    labels = detection_labels()
    labels[0]["boxes"] = labels[0]["boxes"] * 32  # absolute pixels instead of normalised
    with pytest.raises(ValueError, match="normalised"):
        model(pixels(), labels=labels)
    with pytest.raises(ValueError, match="list of 2 dicts"):
        model(pixels(), labels=detection_labels()[:1])


# --------------------------------------------------------------------------------------------------------------------
# Loading a pre-trained SISTA checkpoint, save/load, Auto classes
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("sista")
    torch.manual_seed(1)
    model = SistaModel(tiny_sista_config())
    with torch.no_grad():  # weights no fresh initialisation could reproduce
        for parameter in model.vision_model.parameters():
            parameter.add_(0.5)
    model.save_pretrained(path)
    return path


@pytest.mark.parametrize("model_class", HEADS)
def test_from_pretrained_loads_the_sista_encoder_weights(pretrained_dir, model_class):
    base = SistaModel.from_pretrained(pretrained_dir)
    model, info = model_class.from_pretrained(
        pretrained_dir, num_labels=2, decoder_hidden_size=32, freeze_encoder=True, output_loading_info=True
    )
    encoder = base.vision_model.state_dict()
    assert encoder and all(torch.equal(value, encoder[name]) for name, value in model.vision_model.state_dict().items())
    assert not any(key.startswith("vision_model.") for key in info["missing_keys"])
    assert not info["unexpected_keys"], "text tower and projections are left out without a warning"
    assert all(not parameter.requires_grad for parameter in model.vision_model.parameters())
    if model_class is SistaForObjectDetection:  # missing head weights get the head's own initialisation
        torch.testing.assert_close(model.detection_head.heatmap[2].bias, torch.full((2,), -math.log(99)))
    if model_class is SistaForSemanticSegmentation:
        binary = model_class.from_pretrained(pretrained_dir, num_labels=1, decoder_hidden_size=32)
        torch.testing.assert_close(binary.decoder.classifier.bias, torch.full((1,), -math.log(99)))


def test_from_pretrained_refuses_another_architecture(tmp_path):
    bert_config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(bert_config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a SISTA checkpoint.*'bert'"):
        SistaForImageClassification.from_pretrained(tmp_path)


@pytest.mark.parametrize("model_class", HEADS)
def test_save_load_round_trip(tmp_path, model_class):
    model = tiny_head(model_class, num_labels=3)
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert model_class.__name__ in " ".join(auto_map.values())
    loaded = model_class.from_pretrained(tmp_path).eval()
    for name, value in model(pixels()).items():
        if torch.is_tensor(value):
            assert torch.equal(value, loaded(pixels())[name]), name


@pytest.mark.parametrize("model_class,auto_class", [
    (SistaForImageClassification, "AutoModelForImageClassification"),
    (SistaForSemanticSegmentation, "AutoModelForSemanticSegmentation"),
    (SistaForObjectDetection, "AutoModelForObjectDetection"),
])
def test_auto_class_with_remote_code_loads_the_saved_head(tmp_path, model_class, auto_class):
    import transformers

    model = tiny_head(model_class, num_labels=2)
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map[auto_class] == f"modeling_sista.{model_class.__name__}"
    loaded = getattr(transformers, auto_class).from_pretrained(tmp_path, trust_remote_code=True).eval()
    # the code copied beside the weights, not this checkout's module
    assert type(loaded).__module__.startswith("transformers_modules"), type(loaded).__module__
    assert type(loaded).__name__ == model_class.__name__
    with torch.no_grad():
        expected, got = model(pixels()), loaded(pixels())
    name = "heatmap_logits" if model_class is SistaForObjectDetection else "logits"
    assert torch.equal(expected[name], got[name])
