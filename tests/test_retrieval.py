"""Retrieval: Recall@K against a naive loop on hand-made similarity matrices (paired and semantic hits, ties), the
script against the model's own logits, and errors on bad input."""

import numpy as np
import pytest
import torch
from datasets import DatasetDict

from conftest import load_script
from eval_test_utils import (
    NUM_TEST_STUDIES,
    read_results,
    save_tiny_sista,
    save_tiny_synthcxr,
    tiny_synthcxr_test_split,
)
from sista_examples.checkpoints import load_sista
from sista_examples.evaluation.retrieval import (
    ks_covering_gallery,
    recall_at_k,
    retrieval_metrics,
    retrieval_positives,
)


retrieval = load_script("examples/retrieval.py")


@pytest.fixture(scope="module")
def sista_dir(tmp_path_factory):
    return save_tiny_sista(tmp_path_factory.mktemp("sista"))


@pytest.fixture(scope="module")
def synthcxr_dir(tmp_path_factory):
    return save_tiny_synthcxr(tmp_path_factory.mktemp("data") / "synthcxr")


def naive_recall(similarity, labels, k, semantic):
    """The oracle: for each query, sort the gallery by (-similarity, hit last among ties), look at the first k."""
    similarity = np.asarray(similarity).tolist()
    hits = 0
    for query, row in enumerate(similarity):

        def is_hit(item):
            return item == query or (semantic and list(labels[item]) == list(labels[query]))

        ranked = sorted(range(len(row)), key=lambda item: (-row[item], is_hit(item)))[:k]
        hits += any(is_hit(item) for item in ranked)
    return hits / len(similarity)


def test_known_answer_on_a_three_by_three_matrix():
    similarity = np.array([[0.9, 0.1, 0.0], [0.8, 0.7, 0.2], [0.3, 0.2, 0.1]])
    labels = np.array([[0, 1], [0, 1], [1, 0]])
    paired = retrieval_positives(3)
    semantic = retrieval_positives(3, labels)
    # image->report: query 0 hits at rank 1; query 1 ranks its pair second; query 2 ranks its pair last
    assert recall_at_k(similarity, paired, [1, 2, 3]) == {"R@1": 1 / 3, "R@2": 2 / 3, "R@3": 1.0}
    # semantic: report 0 has query 1's labels, so query 1 hits at rank 1
    assert recall_at_k(similarity, semantic, [1, 2, 3]) == {"R@1": 2 / 3, "R@2": 2 / 3, "R@3": 1.0}
    # report->image is the transpose: report 0's best image is image 0; report 1's is image 1; report 2's is 1
    assert recall_at_k(similarity.T, paired.T, [1]) == {"R@1": 2 / 3}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_equals_a_naive_loop_with_ties_and_shared_labels(seed):
    rng = np.random.default_rng(seed)
    num_items = 12
    similarity = rng.integers(0, 4, (num_items, num_items)).astype(float)  # many ties
    labels = rng.integers(0, 2, (num_items, 2))  # 4 label vectors over 12 items: many semantic positives
    for semantic in (False, True):
        positives = retrieval_positives(num_items, labels if semantic else None)
        for matrix in (similarity, similarity.T):
            got = recall_at_k(matrix, positives, [1, 2, 5, 10, 20])
            for k in (1, 2, 5, 10, 20):
                assert got[f"R@{k}"] == pytest.approx(naive_recall(matrix, labels, k, semantic)), (semantic, k)


def test_ties_count_against_the_query_so_a_collapsed_model_scores_its_worst_case():
    constant = np.ones((4, 4))  # every item equally similar to every query
    labels = np.array([[0, 0], [0, 0], [0, 0], [1, 0]])  # three studies share a label vector
    assert recall_at_k(constant, retrieval_positives(4), [1, 3, 4]) == {
        "R@1": 0.0, "R@3": 0.0, "R@4": 1.0
    }
    semantic = retrieval_positives(4, labels)  # the shared-label queries have 1 non-hit, the last has 3
    assert recall_at_k(constant, semantic, [1, 2]) == {"R@1": 0.0, "R@2": 0.75}


def test_semantic_positives_are_the_pair_and_identical_label_vectors():
    labels = np.array([[0, 0], [1, 0], [0, 0], [1, 1]])
    expected = np.array(
        [[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=bool
    )  # the two normal studies (all zeros) match each other
    assert np.array_equal(retrieval_positives(4, labels), expected)
    assert np.array_equal(retrieval_positives(4), np.eye(4, dtype=bool))


def test_bad_similarity_matrices_are_errors():
    with pytest.raises(ValueError, match="at least one query"):
        recall_at_k(np.zeros((0, 0)), np.zeros((0, 0), bool), [1])
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(np.array([[np.nan]]), np.eye(1, dtype=bool), [1])
    with pytest.raises(ValueError, match="one shape"):
        recall_at_k(np.zeros((2, 2)), np.eye(3, dtype=bool), [1])
    with pytest.raises(ValueError, match="recall_at"):
        retrieval.RetrievalArguments(recall_at="0,5")


def test_script_equals_recall_from_the_models_own_logits(sista_dir, synthcxr_dir, tmp_path):
    results = retrieval.main(
        [
            "--model_name_or_path",
            str(sista_dir),
            "--dataset_dir",
            str(synthcxr_dir),
            "--output_dir",
            str(tmp_path),
            "--batch_size",
            "6",
        ]
    )
    assert results == read_results(tmp_path, "retrieval")
    assert results["num_pairs"] == NUM_TEST_STUDIES and results["task"] == "retrieval"

    # independent route: one forward pass of every image against every report, then the naive loop
    dataset = tiny_synthcxr_test_split()["test"]
    model, processor = load_sista(sista_dir, "cpu")
    with torch.no_grad():
        inputs = processor(
            text=list(dataset["report"]), images=list(dataset["image"]), return_tensors="pt", max_length=64
        )
        logits = model(**inputs).logits_per_image.numpy()
    labels = np.asarray(dataset["labels"])
    for view, semantic in (("paired", False), ("semantic", True)):
        for direction, matrix in (("image_to_report", logits), ("report_to_image", logits.T)):
            for k in (1, 5, 10):
                expected = naive_recall(matrix, labels, k, semantic)
                assert results[view][direction][f"R@{k}"] == pytest.approx(expected), (view, direction, k)
            assert all(
                results["semantic"][direction][f"R@{k}"] >= results["paired"][direction][f"R@{k}"] for k in (1, 5, 10)
            )
    markdown = (tmp_path / "retrieval_results.md").read_text()
    assert "| semantic | image → report |" in markdown and "label vector" in markdown


def test_missing_labels_need_semantic_positives_off(sista_dir, tmp_path):
    unlabeled = DatasetDict({"test": tiny_synthcxr_test_split()["test"].remove_columns("labels").select(range(8))})
    unlabeled.save_to_disk(str(tmp_path / "unlabeled"))
    arguments = [
        "--model_name_or_path",
        str(sista_dir),
        "--dataset_dir",
        str(tmp_path / "unlabeled"),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    with pytest.raises(ValueError, match="semantic positives.*needs the column 'labels'"):
        retrieval.main(arguments)
    results = retrieval.main(arguments + ["--semantic_positives", "False"])
    assert set(results) >= {"paired"} and "semantic" not in results
    assert results["paired"]["image_to_report"]["R@10"] >= results["paired"]["image_to_report"]["R@1"]


def test_missing_report_column_names_the_column_and_the_task(sista_dir, tmp_path):
    no_reports = DatasetDict({"test": tiny_synthcxr_test_split()["test"].remove_columns("report").select(range(4))})
    no_reports.save_to_disk(str(tmp_path / "no_reports"))
    with pytest.raises(ValueError, match="Retrieval needs the column 'report'"):
        retrieval.main(
            [
                "--model_name_or_path",
                str(sista_dir),
                "--dataset_dir",
                str(tmp_path / "no_reports"),
                "--output_dir",
                str(tmp_path / "out"),
            ]
        )


def naive_grouped_recall(similarity, study_ids, k):
    """The oracle with studies: a hit is any gallery item of the query's study; ties rank hits last."""
    hits = 0
    for query, row in enumerate(np.asarray(similarity).tolist()):
        ranked = sorted(range(len(row)), key=lambda item: (-row[item], study_ids[item] == study_ids[query]))[:k]
        hits += any(study_ids[item] == study_ids[query] for item in ranked)
    return hits / len(similarity)


@pytest.mark.parametrize("seed", [0, 1])
def test_items_of_one_study_are_hits_for_each_other_like_a_naive_loop(seed):
    rng = np.random.default_rng(seed)
    study_ids = np.array(["a", "a", "b", "c", "c", "c", "d", "e"])
    similarity = rng.integers(0, 4, (8, 8)).astype(float)
    positives = retrieval_positives(8, study_ids=study_ids)
    for matrix in (similarity, similarity.T):
        got = recall_at_k(matrix, positives, [1, 2, 3])
        for k in (1, 2, 3):
            assert got[f"R@{k}"] == pytest.approx(naive_grouped_recall(matrix, study_ids, k))
    with pytest.raises(ValueError, match="study_ids"):
        retrieval_positives(8, study_ids=study_ids[:3])


def test_a_perfect_model_scores_one_on_a_study_with_two_images(caplog):
    # two frontal images of one study share its report: their rows hold identical report embeddings
    report_embeds = np.eye(3)[[0, 0, 1, 2]]
    image_embeds = report_embeds.copy()  # a perfect model: each image sits on its report
    ungrouped = retrieval_metrics(image_embeds, report_embeds, [1])
    assert ungrouped["paired"]["image_to_report"]["R@1"] == 0.5  # the tie with the other row counts against it
    with caplog.at_level("WARNING"):
        grouped = retrieval_metrics(image_embeds, report_embeds, [1, 4, 10], study_ids=np.array(["s", "s", "t", "u"]))
    assert grouped["paired"]["image_to_report"]["R@1"] == 1.0
    assert grouped["paired"]["report_to_image"]["R@1"] == 1.0
    assert "Recall@4,10 covers the whole gallery of 4 items" in caplog.text
    assert ks_covering_gallery([1, 4, 10], 4) == [4, 10]
