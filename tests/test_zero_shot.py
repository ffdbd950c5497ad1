"""Zero-shot classification: prompt averaging, two-way softmax scores, AUROC with skipped classes, the transformers
pipeline against the model's own logits, the script end to end, and its errors on bad input."""

import json
import logging

import numpy as np
import pytest
import torch
from datasets import DatasetDict
from PIL import Image

from conftest import load_script
from eval_test_utils import (
    NUM_TEST_STUDIES,
    read_results,
    save_tiny_sista,
    save_tiny_synthcxr,
    tiny_synthcxr_test_split,
)
from sista_examples.data.synthcxr import CLASS_NAMES
from sista_examples.checkpoints import check_sista_checkpoint, load_sista


zero_shot = load_script("examples/zero_shot.py")


@pytest.fixture(scope="module")
def sista_dir(tmp_path_factory):
    return save_tiny_sista(tmp_path_factory.mktemp("sista"))


@pytest.fixture(scope="module")
def synthcxr_dir(tmp_path_factory):
    return save_tiny_synthcxr(tmp_path_factory.mktemp("data") / "synthcxr")


def mann_whitney_auroc(labels, scores):
    """AUROC as the fraction of (positive, negative) pairs ranked correctly, ties counting one half."""
    positives = [s for s, y in zip(scores, labels) if y == 1]
    negatives = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


# ---------------------------------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------------------------------


def test_every_synthcxr_class_has_positive_and_negative_prompts_naming_its_side():
    prompts = zero_shot.class_prompts(list(CLASS_NAMES))
    assert list(prompts) == list(CLASS_NAMES)
    for name, pair in prompts.items():
        assert len(pair["positive"]) >= 3 and len(pair["negative"]) >= 3
        side = name.split("_")[0] if "_" in name else None
        if side:
            other = "left" if side == "right" else "right"
            assert all(side in text and other not in text for text in pair["positive"] + pair["negative"]), name
    assert "small left pleural effusion." in prompts["left_effusion"]["positive"]
    assert "no left pleural effusion." in prompts["left_effusion"]["negative"]


def test_unknown_classes_get_generic_prompts_and_overrides_win():
    prompts = zero_shot.class_prompts(
        ["Pleural_Effusion", "nodule"], {"nodule": {"positive": ["a"], "negative": ["b"]}}
    )
    assert "no pleural effusion." in prompts["Pleural_Effusion"]["negative"]
    assert "pleural effusion." in prompts["Pleural_Effusion"]["positive"]
    assert prompts["nodule"] == {"positive": ["a"], "negative": ["b"]}
    with pytest.raises(ValueError, match="nodule.*negative"):
        zero_shot.class_prompts(["nodule"], {"nodule": {"positive": ["a"], "negative": []}})


def test_template_embeddings_are_averaged_then_renormalised():
    embeds = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    averaged = zero_shot.average_prompt_embeddings(embeds, [2, 1])
    assert torch.allclose(averaged, torch.tensor([[0.5**0.5, 0.5**0.5], [0.6, 0.8]]))


def test_scores_are_the_softmax_over_positive_and_negative_logits():
    image_embeds = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    positive = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    negative = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    scores = zero_shot.zero_shot_scores(image_embeds, positive, negative, logit_scale=10.0)
    # by hand: sigmoid(10 * (<x, pos> - <x, neg>))
    expected = torch.tensor(
        [[1 / (1 + np.exp(-10)), 1 / (1 + np.exp(10))], [1 / (1 + np.exp(10)), 1 / (1 + np.exp(-10))], [0.5, 0.5]]
    )
    assert torch.allclose(scores, expected.float(), atol=1e-6)


def test_auroc_per_class_equals_pair_counting_and_single_valued_classes_are_skipped():
    labels = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1], [1, 0, 1]])
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.4, 0.2], [0.4, 0.3, 0.1], [0.4, 0.2, 0.9], [0.8, 0.5, 0.5]])
    metrics = zero_shot.per_class_auroc(labels, scores, ["a", "b", "c"])
    assert metrics["per_class"]["a"]["auroc"] == pytest.approx(mann_whitney_auroc(labels[:, 0], scores[:, 0]))
    assert metrics["per_class"]["a"]["auroc"] == pytest.approx(5.5 / 6)
    assert metrics["per_class"]["b"] == {
        "auroc": None,
        "num_positive": 0,
        "num_negative": 5,
        "skipped": "only negative labels in the split",
    }
    assert metrics["per_class"]["c"]["skipped"] == "only positive labels in the split"
    assert metrics["macro_auroc"] == pytest.approx(5.5 / 6)
    assert (metrics["num_classes_evaluated"], metrics["num_classes_skipped"]) == (1, 2)
    json.dumps(metrics, allow_nan=False)  # no NaN anywhere


def test_auroc_with_every_class_skipped_has_no_macro_and_empty_input_is_an_error():
    metrics = zero_shot.per_class_auroc(np.zeros((3, 2), int), np.random.rand(3, 2), ["a", "b"])
    assert metrics["macro_auroc"] is None and metrics["num_classes_evaluated"] == 0
    with pytest.raises(ValueError, match="empty"):
        zero_shot.per_class_auroc(np.zeros((0, 2), int), np.zeros((0, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="0 or 1"):
        zero_shot.per_class_auroc(np.array([[2], [0]]), np.zeros((2, 1)), ["a"])


# ---------------------------------------------------------------------------------------------------------------------
# The transformers pipeline
# ---------------------------------------------------------------------------------------------------------------------


def test_pipeline_sorts_labels_and_its_scores_are_the_softmax_of_the_model_logits(sista_dir):
    from transformers import pipeline

    classifier = pipeline("zero-shot-image-classification", model=str(sista_dir), trust_remote_code=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 36), dtype=np.uint8), mode="L")
    labels = ["small left pleural effusion.", "no pneumothorax.", "right upper lobe opacity.", "cardiomegaly."]
    predictions = classifier(image, candidate_labels=labels, hypothesis_template="{}")

    scores = [prediction["score"] for prediction in predictions]
    assert scores == sorted(scores, reverse=True)
    assert sorted(prediction["label"] for prediction in predictions) == sorted(labels)

    model, processor = load_sista(sista_dir, "cpu")
    with torch.no_grad():
        inputs = processor(text=labels, images=[image.convert("RGB")], return_tensors="pt", padding=True)
        direct = model(**inputs).logits_per_image[0].softmax(dim=-1)
    expected = dict(zip(labels, direct.tolist()))
    assert len(set(np.round(direct.tolist(), 6))) > 1  # the check is not vacuous: the labels score differently
    for prediction in predictions:
        assert prediction["score"] == pytest.approx(expected[prediction["label"]], abs=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------------------------------


def test_script_on_a_saved_synthcxr_writes_per_class_auroc_and_the_pipeline_example(sista_dir, synthcxr_dir, tmp_path):
    results = zero_shot.main(
        [
            "--model_name_or_path",
            str(sista_dir),
            "--dataset_dir",
            str(synthcxr_dir),
            "--output_dir",
            str(tmp_path),
            "--batch_size",
            "8",
        ]
    )
    assert results == read_results(tmp_path, "zero_shot")
    assert results["task"] == "zero-shot" and results["num_images"] == NUM_TEST_STUDIES
    labels = np.asarray(tiny_synthcxr_test_split()["test"]["labels"])
    evaluated = []
    for index, name in enumerate(CLASS_NAMES):
        entry = results["per_class"][name]
        assert entry["num_positive"] == labels[:, index].sum()
        if 0 < entry["num_positive"] < NUM_TEST_STUDIES:
            assert 0.0 <= entry["auroc"] <= 1.0 and entry["skipped"] is None
            evaluated.append(entry["auroc"])
        else:
            assert entry["auroc"] is None and "only" in entry["skipped"]
    assert results["macro_auroc"] == pytest.approx(np.mean(evaluated))
    predictions = results["pipeline_example"]["predictions"]
    assert len(predictions) == len(CLASS_NAMES)
    assert [p["score"] for p in predictions] == sorted((p["score"] for p in predictions), reverse=True)
    assert "| **macro** |" in (tmp_path / "zero_shot_results.md").read_text()


def test_scores_of_the_script_equal_a_direct_computation(sista_dir):
    dataset = tiny_synthcxr_test_split()["test"].select(range(6))
    model, processor = load_sista(sista_dir, "cpu")
    prompts = zero_shot.class_prompts(["left_effusion"])
    positive, negative = zero_shot.embed_class_prompts(model, processor, prompts)
    image_embeds = torch.cat(
        [
            torch.nn.functional.normalize(
                model.get_image_features(**processor(images=[image], return_tensors="pt")).pooler_output, dim=-1
            )
            for image in dataset["image"]
        ]
    ).detach()
    scores = zero_shot.zero_shot_scores(image_embeds, positive, negative, float(model.logit_scale.detach().exp()))
    # independent route: every template through the full forward, logits averaged in embedding space by hand
    with torch.no_grad():
        outputs = model(
            **processor(
                text=prompts["left_effusion"]["positive"] + prompts["left_effusion"]["negative"],
                images=list(dataset["image"]),
                return_tensors="pt",
            )
        )
    number_positive = len(prompts["left_effusion"]["positive"])
    text_embeds = outputs.text_embeds
    pos = torch.nn.functional.normalize(text_embeds[:number_positive].mean(0), dim=-1)
    neg = torch.nn.functional.normalize(text_embeds[number_positive:].mean(0), dim=-1)
    scale = model.logit_scale.exp()
    expected = torch.sigmoid(scale * (outputs.image_embeds @ pos - outputs.image_embeds @ neg))
    assert torch.allclose(scores[:, 0], expected, atol=1e-5)


def test_missing_dataset_folder_generates_synthcxr_when_asked_with_a_log_line(sista_dir, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        results = zero_shot.main(
            [
                "--model_name_or_path",
                str(sista_dir),
                "--dataset_dir",
                str(tmp_path / "absent"),
                "--generate_synthcxr",
                "--output_dir",
                str(tmp_path / "out"),
                "--synthcxr_num_test",
                "12",
                "--pipeline_example",
                "False",
            ]
        )
    assert "does not exist: generating a small SynthCXR" in caplog.text
    assert results["num_images"] == 12 and results["dataset"] == "SynthCXR (generated)"
    assert not (tmp_path / "absent").exists()  # nothing written where the user's data would go


def test_missing_dataset_folder_without_the_flag_is_an_error_naming_it(sista_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="--dataset_dir .*absent does not exist.*--generate_synthcxr"):
        zero_shot.main(
            ["--model_name_or_path", str(sista_dir), "--dataset_dir", str(tmp_path / "absent"), "--output_dir",
             str(tmp_path / "out"), "--pipeline_example", "False"]
        )  # fmt: skip
    assert not (tmp_path / "absent").exists() and not (tmp_path / "out" / "zero_shot_results.json").exists()


def test_empty_split_is_a_clear_error(sista_dir, tmp_path):
    empty = DatasetDict({"test": tiny_synthcxr_test_split()["test"].select([])})
    empty.save_to_disk(str(tmp_path / "empty"), num_shards={"test": 1})
    with pytest.raises(ValueError, match="'test' split .* is empty"):
        zero_shot.main(
            [
                "--model_name_or_path",
                str(sista_dir),
                "--dataset_dir",
                str(tmp_path / "empty"),
                "--output_dir",
                str(tmp_path / "out"),
            ]
        )
    assert not (tmp_path / "out" / "zero_shot_results.json").exists()
    # saved without a shard, datasets cannot even read the split back: still a ValueError that says why
    empty.save_to_disk(str(tmp_path / "unreadable"))
    with pytest.raises(ValueError, match="could not be loaded.*empty"):
        zero_shot.main(
            [
                "--model_name_or_path",
                str(sista_dir),
                "--dataset_dir",
                str(tmp_path / "unreadable"),
                "--output_dir",
                str(tmp_path / "out"),
            ]
        )


def test_a_folder_that_is_not_a_sista_checkpoint_is_named(tmp_path):
    from transformers import ViTConfig

    ViTConfig().save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match=r"vit.*is not a SISTA checkpoint.*'vit'"):
        check_sista_checkpoint(tmp_path / "vit")
    with pytest.raises(ValueError, match="no config.json"):
        check_sista_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        zero_shot.main(["--model_name_or_path", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "out")])


def test_missing_labels_column_names_the_column_and_the_task(sista_dir, tmp_path):
    unlabeled = DatasetDict({"test": tiny_synthcxr_test_split()["test"].remove_columns("labels")})
    unlabeled.save_to_disk(str(tmp_path / "unlabeled"))
    with pytest.raises(ValueError, match="Zero-shot classification needs the column 'labels'"):
        zero_shot.main(
            [
                "--model_name_or_path",
                str(sista_dir),
                "--dataset_dir",
                str(tmp_path / "unlabeled"),
                "--output_dir",
                str(tmp_path / "out"),
            ]
        )


def test_a_bad_prompts_file_is_named(tmp_path):
    missing, broken, listed = tmp_path / "missing.json", tmp_path / "broken.json", tmp_path / "list.json"
    broken.write_text("{not json")
    listed.write_text('["left effusion"]')
    for path, reason in ((missing, "readable JSON"), (broken, "readable JSON"), (listed, "got a list")):
        with pytest.raises(ValueError, match=rf"--prompts_file '{path}'.*{reason}"):
            zero_shot.read_prompts_file(str(path))
    good = tmp_path / "good.json"
    good.write_text('{"left_effusion": {"positive": ["left effusion"], "negative": ["no effusion"]}}')
    assert zero_shot.read_prompts_file(str(good)) == {
        "left_effusion": {"positive": ["left effusion"], "negative": ["no effusion"]}
    }


def test_chexpert_class_names_get_the_radiology_prompt_sets_whatever_their_spelling():
    from sista_examples.evaluation.prompts import CHEXPERT_CLASS_PROMPTS

    names = list(CHEXPERT_CLASS_PROMPTS)
    assert len(names) == 14
    prompts = zero_shot.class_prompts(names)
    assert prompts == {name: CHEXPERT_CLASS_PROMPTS[name] for name in names}
    assert zero_shot.class_prompts(["no_finding"])["no_finding"] == CHEXPERT_CLASS_PROMPTS["No Finding"]
    for pair in prompts.values():
        assert not set(pair["positive"]) & set(pair["negative"])
    generic = zero_shot.class_prompts(["support hardware"])
    texts = [text for pair in [*prompts.values(), *generic.values()] for texts in pair.values() for text in texts]
    assert not any(text.startswith(("no no ", "small no", "large no")) for text in texts)
    assert not any(text.startswith(("small ", "large ")) for text in generic["support hardware"]["positive"])
