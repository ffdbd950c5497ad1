"""
The scripts with a convolutional vision tower (the `tiny-resnet` preset, stride 8: a 4x4 grid at 32 px): pre-training,
the three fine-tuning heads, zero-shot, retrieval, grounding and a release dry run, checked against the model run on
its own or against the data; the presets, the training image size saved with the processor, the checkpoint size check
and the chance level of Recall@K.
"""

import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import BertConfig, HfArgumentParser, ResNetConfig, ViTConfig

from conftest import build_tiny_tokenizer, load_script
from modeling_sista import SistaModel
from processing_sista import SistaImageProcessor
from sista_examples.data.synthcxr import generate_synthcxr, save_synthcxr
from sista_examples.evaluation.checkpoints import load_sista, read_training_image_size
from sista_examples.evaluation.grounding import pointing_game_hit, upsample_maps
from sista_examples.evaluation.retrieval import chance_recall_at_k, retrieval_positives
from sista_examples.evaluation.summary import learned_metrics_rows
from sista_examples.hub.load_check import CHECK_TEXTS, check_images
from sista_examples.hub.release import check_release_folder
from sista_examples.training.pretraining import MODEL_PRESETS, DataArguments, ModelArguments, build_model
from sista_examples.training.trainer import SistaTrainingArguments, differing_size_fields


pretrain = load_script("examples/pretrain.py")
retrieval = load_script("examples/retrieval.py")
zero_shot = load_script("examples/zero_shot.py")
grounding = load_script("examples/visualize_grounding.py")
summarize = load_script("examples/summarize_evaluation.py")
finetune_classification = load_script("examples/finetune_classification.py")
finetune_detection = load_script("examples/finetune_detection.py")
finetune_segmentation = load_script("examples/finetune_segmentation.py")
push_to_hub = load_script("examples/push_to_hub.py")

IMAGE_SIZE = 32
GRID = (4, 4)  # tiny-resnet: embedder stride 4, second stage stride 2
NUM_TEST = 12
FINETUNING = [
    "--max_steps", "1", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "6",
    "--report_to", "none", "--save_strategy", "no", "--use_cpu", "--disable_tqdm", "true",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "synthcxr"
    dataset = generate_synthcxr(
        num_pretrain=32, num_train=16, num_validation=8, num_test=NUM_TEST, image_size=IMAGE_SIZE, seed=0
    )
    save_synthcxr(dataset, str(path))
    return path


@pytest.fixture(scope="module")
def resnet_run(dataset_dir, tmp_path_factory):
    """pretrain.py with --model_preset tiny-resnet: 2 optimizer steps of SISTA, evaluated on the validation split."""
    output_dir = tmp_path_factory.mktemp("resnet") / "run"
    pretrain.main(
        [
            "--dataset_path", str(dataset_dir), "--output_dir", str(output_dir), "--model_preset", "tiny-resnet",
            "--objective", "sista", "--max_steps", "2", "--per_device_train_batch_size", "8", "--do_eval",
            "--per_device_eval_batch_size", "8", "--report_to", "none", "--disable_tqdm", "True",
            "--dataloader_num_workers", "0", "--save_strategy", "no", "--seed", "3",
        ]
    )  # fmt: skip
    return output_dir


def evaluation_arguments(resnet_run, dataset_dir, output_dir) -> list[str]:
    return ["--model_name_or_path", str(resnet_run), "--dataset_dir", str(dataset_dir), "--split", "test",
            "--output_dir", str(output_dir), "--batch_size", "5"]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Presets and the training image size
# ---------------------------------------------------------------------------------------------------------------------


def test_small_preset_is_the_resnet_recipe_with_an_8x8_grid():
    tokenizer = build_tiny_tokenizer()
    model = build_model(ModelArguments(model_preset="small"), tokenizer).eval()
    vision = model.config.vision_config
    assert isinstance(vision, ResNetConfig) and vision.hidden_sizes == [48, 96, 192]
    assert model.config.vision_pooling == "mean" and model.config.text_config.hidden_size == 192
    inputs = tokenizer(["left effusion"], return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs, pixel_values=torch.randn(1, 3, 128, 128))
    assert tuple(outputs.patch_grid_size) == (8, 8)
    # the ViT of the same width stays available under its own name
    vit = build_model(ModelArguments(model_preset="small-vit"), tokenizer)
    assert isinstance(vit.config.vision_config, ViTConfig) and vit.config.vision_config.image_size == 128
    assert set(MODEL_PRESETS) == {"tiny", "tiny-resnet", "small", "small-vit", "base"}


def test_pooler_is_a_vision_pooling_choice_and_the_preset_pooling_can_be_overridden():
    parser = HfArgumentParser((ModelArguments, DataArguments, SistaTrainingArguments))
    model_args, _, _ = parser.parse_args_into_dataclasses(
        ["--model_preset", "tiny-resnet", "--vision_pooling", "pooler", "--output_dir", "unused"]
    )
    model = build_model(model_args, build_tiny_tokenizer())
    assert model.config.vision_pooling == "pooler"
    with pytest.raises(SystemExit):  # argparse refuses a pooling that is not a choice
        parser.parse_args_into_dataclasses(["--vision_pooling", "max", "--output_dir", "unused"])


def test_pretraining_saves_the_training_size_with_the_processor(resnet_run):
    model = SistaModel.from_pretrained(resnet_run)
    assert model.config.vision_config.model_type == "resnet"
    assert not hasattr(model.config.vision_config, "image_size")
    assert read_training_image_size(resnet_run) == IMAGE_SIZE
    assert SistaImageProcessor.from_pretrained(resnet_run).size["height"] == IMAGE_SIZE
    eval_results = json.loads((resnet_run / "eval_results.json").read_text())
    assert 0 <= eval_results["retrieval_exact_top1"] <= 1


def test_continuing_from_a_resnet_checkpoint_keeps_its_size_and_refuses_another(resnet_run, dataset_dir, tmp_path):
    common = ["--dataset_path", str(dataset_dir), "--output_dir", str(tmp_path / "continued"), "--max_steps", "1",
              "--per_device_train_batch_size", "8", "--report_to", "none", "--dataloader_num_workers", "0",
              "--save_strategy", "no", "--logging_steps", "1", "--model_name_or_path", str(resnet_run)]  # fmt: skip
    with pytest.raises(ValueError, match=r"--image_size 64 differs from the 32 px of --model_name_or_path"):
        pretrain.main(common + ["--image_size", "64"])
    pretrain.main(common)
    assert read_training_image_size(tmp_path / "continued") == IMAGE_SIZE


def test_checkpoint_size_check_compares_every_size_field_of_any_family():
    small = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]).to_dict()
    wider = ResNetConfig(embedding_size=8, hidden_sizes=[8, 24], depths=[1, 1]).to_dict()
    assert differing_size_fields(small, small) == []
    assert differing_size_fields(small, wider) == [("hidden_sizes", [8, 16], [8, 24])]
    vit = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).to_dict()
    differences = dict((key, (saved, current)) for key, saved, current in differing_size_fields(small, vit))
    assert differences["model_type"] == ("resnet", "vit") and differences["hidden_size"] == (None, 16)
    bert = BertConfig(hidden_size=32).to_dict()
    assert [key for key, *_ in differing_size_fields(bert, BertConfig(hidden_size=64).to_dict())] == ["hidden_size"]


# ---------------------------------------------------------------------------------------------------------------------
# Zero-shot, retrieval, grounding and the learned-metrics block
# ---------------------------------------------------------------------------------------------------------------------


def naive_first_hit_recall(similarity: np.ndarray, k: int) -> float:
    """The oracle: each query's gallery sorted by (-similarity, own pair last among ties), own pair in the first k."""
    hits = 0
    for query, row in enumerate(similarity.tolist()):
        ranked = sorted(range(len(row)), key=lambda item: (-row[item], item == query))[:k]
        hits += query in ranked
    return hits / len(similarity)


def test_chance_recall_equals_the_average_over_every_ranking():
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 0], [1, 0]])
    positives = retrieval_positives(len(labels), labels)
    chance = chance_recall_at_k(positives, [1, 2, 5, 7])
    for k in (1, 2, 5, 7):
        expected = np.mean(
            [np.mean([positives[query, list(order[:k])].any() for query in range(len(labels))])
             for order in itertools.permutations(range(len(labels)))]
        )  # fmt: skip
        assert chance[f"R@{k}"] == pytest.approx(expected)
    assert chance_recall_at_k(np.eye(480, dtype=bool), [10])["R@10"] == pytest.approx(10 / 480)
    with pytest.raises(ValueError, match="positives"):
        chance_recall_at_k(np.zeros((0, 3), dtype=bool), [1])


def test_evaluation_scripts_on_a_resnet_and_the_learned_metrics_block(resnet_run, dataset_dir, tmp_path):
    arguments = evaluation_arguments(resnet_run, dataset_dir, tmp_path)
    retrieval_results = retrieval.main(arguments)
    zero_shot_results = zero_shot.main(arguments)
    grounding_results = grounding.main(arguments + ["--num_figures", "2"])

    # retrieval against the model's own logits, ranked by the naive loop
    from datasets import load_from_disk

    dataset = load_from_disk(str(dataset_dir))["test"]
    model, processor = load_sista(resnet_run, "cpu")
    with torch.no_grad():
        inputs = processor(text=list(dataset["report"]), images=list(dataset["image"]), return_tensors="pt")
        outputs = model(**inputs, output_token_patch_weights=True)
    logits = outputs.logits_per_image.numpy()
    for k in (1, 5, 10):
        expected = naive_first_hit_recall(logits, k)
        assert retrieval_results["paired"]["image_to_report"][f"R@{k}"] == pytest.approx(expected)
        assert retrieval_results["paired"]["chance"][f"R@{k}"] == pytest.approx(min(k, NUM_TEST) / NUM_TEST)

    # the grounding maps come from the backbone's own grid: one record recomputed from the model's weights
    assert tuple(outputs.patch_grid_size) == GRID
    record = grounding_results["records"][0]
    index = next(i for i, study in enumerate(dataset["study_id"]) if study == record["study_id"])
    word_maps, grid = grounding.grounding_maps(model, processor, [dataset[index]["image"]], [dataset[index]["report"]])
    assert grid == GRID
    chosen = [word_maps[0].words.index(word) for word in record["words"]]
    heatmap = upsample_maps(word_maps[0].maps[chosen].mean(0, keepdims=True), GRID, (32, 32))[0]
    assert record["peak"] == list(pointing_game_hit(heatmap, np.ones((32, 32), bool))[1])
    token_weights = outputs.token_patch_weights[index].numpy()
    first_word_tokens = [position for position, word in enumerate(inputs.word_ids(index)) if word == 0]
    np.testing.assert_allclose(word_maps[0].maps[0], token_weights[first_word_tokens].mean(0), rtol=1e-5, atol=1e-7)
    with Image.open(grounding_results["overview_figure"]) as png:
        assert png.format == "PNG"

    # the block prints each value of the three files beside its reference
    block = summarize.main(["--evaluation_dir", str(tmp_path)])
    rows = learned_metrics_rows({"zero_shot": zero_shot_results, "retrieval": retrieval_results,
                                 "grounding": grounding_results})  # fmt: skip
    assert rows[0] == ("zero-shot macro AUROC", zero_shot_results["macro_auroc"], 0.5, "chance")
    assert ("paired image→report R@10", retrieval_results["paired"]["image_to_report"]["R@10"],
            retrieval_results["paired"]["chance"]["R@10"], "chance") in rows  # fmt: skip
    overall = grounding_results["overall"]
    pointing = [row for row in rows if row[0] == "pointing game"]
    assert pointing == [
        ("pointing game", overall["accuracy"], overall["random_baseline"], "random point"),
        ("pointing game", overall["accuracy"], overall["fixed_point_baseline"], "fixed point"),
        ("pointing game", overall["accuracy"], overall["text_prior_baseline"], "text prior"),
        ("pointing game", overall["accuracy"], overall["shuffled_image_accuracy"], "shuffled image"),
        ("pointing game", overall["accuracy"], overall["oracle"], "oracle at the model's grid"),
    ]
    assert rows[-2:] == [
        ("pointing CNR", overall["cnr"], overall["text_prior_cnr"], "text prior"),
        ("pointing CNR", overall["cnr"], overall["shuffled_image_cnr"], "shuffled image"),
    ]
    assert (tmp_path / "learned_metrics.txt").read_text() == block + "\n"
    with pytest.raises(ValueError, match="lacks"):
        summarize.main(["--evaluation_dir", str(tmp_path / "empty")])


# ---------------------------------------------------------------------------------------------------------------------
# Fine-tuning heads and the release
# ---------------------------------------------------------------------------------------------------------------------


def test_finetuning_heads_from_a_resnet_checkpoint(resnet_run, dataset_dir, tmp_path):
    from datasets import load_from_disk

    common = ["--dataset_dir", str(dataset_dir), *FINETUNING, "--model_name_or_path", str(resnet_run)]
    classification = finetune_classification.main(common + ["--output_dir", str(tmp_path / "classification")])
    assert 0 <= classification["metrics"]["auroc"] <= 1

    segmentation = finetune_segmentation.main(common + ["--output_dir", str(tmp_path / "segmentation")])
    masks = np.stack([np.asarray(mask) > 0 for mask in load_from_disk(str(dataset_dir))["test"]["mask"]])
    assert masks.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE)  # already the model's frame: the count is the data's own
    assert segmentation["metrics"]["test_foreground_fraction"] == pytest.approx(masks.mean())

    detection = finetune_detection.main(common + ["--output_dir", str(tmp_path / "detection")])
    boxes = sum(len(objects["bbox"]) for objects in load_from_disk(str(dataset_dir))["test"]["objects"])
    assert detection["metrics"]["num_ground_truth_boxes"] == boxes
    assert SistaImageProcessor.from_pretrained(tmp_path / "detection").size["height"] == IMAGE_SIZE


def test_from_scratch_resnet_head(dataset_dir, tmp_path):
    results = finetune_classification.main(
        ["--dataset_dir", str(dataset_dir), "--output_dir", str(tmp_path), *FINETUNING, "--from_scratch",
         "--scratch_vision_backbone", "resnet", "--scratch_hidden_size", "16", "--scratch_image_size", "32"]
    )  # fmt: skip
    assert 0 <= results["metrics"]["auroc"] <= 1
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["vision_config"]["model_type"] == "resnet" and config["vision_config"]["hidden_sizes"] == [4, 8, 16]


def test_release_dry_run_of_a_resnet_loads_with_identical_outputs(resnet_run, tmp_path):
    release = tmp_path / "release"
    arguments = ["--model_dir", str(resnet_run), "--output_dir", str(release), "--dry_run", "--skip_check"]
    assert push_to_hub.main(arguments) == 0
    card = (release / "README.md").read_text()
    assert "`resnet` (" in card and "hidden_sizes [8, 16]" in card
    assert f"Images are {IMAGE_SIZE} × {IMAGE_SIZE} pixels" in card

    summary = check_release_folder(release, tmp_path / "outputs.safetensors")
    assert summary["classes"]["AutoModel"].endswith("SistaModel")
    remote = load_file(tmp_path / "outputs.safetensors")
    model, processor = load_sista(resnet_run, "cpu")
    inputs = processor(text=CHECK_TEXTS, images=check_images(IMAGE_SIZE), return_tensors="pt", padding=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the child runs on one thread too
    try:
        with torch.no_grad():
            outputs = model(**inputs, output_token_patch_weights=True)
    finally:
        torch.set_num_threads(threads)
    for key in ("image_embeds", "text_embeds", "logits_per_image", "token_patch_weights"):
        torch.testing.assert_close(remote[f"AutoModel.{key}"], getattr(outputs, key), rtol=1e-5, atol=1e-6)
