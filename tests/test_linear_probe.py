"""The linear probe (scikit-learn, C chosen on validation), the heads' validation-chosen step, and the embedding
spread that retrieval reports: each against a hand computation."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from conftest import load_script
from eval_test_utils import save_tiny_sista
from sista_examples.data.synthcxr import generate_synthcxr, save_synthcxr


linear_probe = load_script("examples/linear_probe.py")
retrieval = load_script("examples/retrieval.py")
finetune_detection = load_script("examples/finetune_detection.py")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "synthcxr"
    dataset = generate_synthcxr(num_pretrain=0, num_train=40, num_validation=16, num_test=16, image_size=32)
    save_synthcxr(dataset, str(path))
    return path


def test_macro_auroc_skips_labels_with_one_value():
    labels = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.5], [0.4, 0.2, 0.1], [0.5, 0.9, 0.7]])
    mean, per_label = linear_probe.macro_auroc(labels, scores)
    assert per_label[1] is None and per_label[2] is None  # all 0, all 1
    assert per_label[0] == pytest.approx(roc_auc_score(labels[:, 0], scores[:, 0])) and mean == per_label[0]


def test_probe_chooses_c_on_validation_like_a_hand_loop():
    rng = np.random.default_rng(0)
    features = {split: rng.normal(size=(n, 6)) for split, n in (("train", 60), ("validation", 40), ("test", 40))}
    weights = rng.normal(size=(6, 3))
    labels = {split: (x @ weights + rng.normal(scale=1.5, size=(len(x), 3)) > 0).astype(int)
              for split, x in features.items()}  # fmt: skip
    args = linear_probe.LinearProbeArguments(model_name_or_path="unused", c_values="0.001,0.1,10")
    rows = list(range(0, 60, 2))
    result = linear_probe.probe_fraction(features, labels, rows, args)

    def hand(c, split):  # one LogisticRegression per label, no OneVsRestClassifier
        scaler = StandardScaler().fit(features["train"][rows])
        scores = np.stack([
            LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(features["train"][rows]),
                                                       labels["train"][rows, j])
            .predict_proba(scaler.transform(features[split]))[:, 1]
            for j in range(3)
        ], axis=1)  # fmt: skip
        return np.mean([roc_auc_score(labels[split][:, j], scores[:, j]) for j in range(3)])

    by_c = {c: hand(c, "validation") for c in (0.001, 0.1, 10)}
    assert result["validation_auroc_by_c"] == pytest.approx({f"{c:g}": v for c, v in by_c.items()})
    assert result["best_c"] == max(by_c, key=by_c.get) and result["train_samples"] == 30
    assert result["auroc"] == pytest.approx(hand(result["best_c"], "test")) and result["auroc"] > 0.7


def test_linear_probe_end_to_end(dataset_dir, tmp_path):
    model_dir = save_tiny_sista(tmp_path / "model")
    results = linear_probe.main([
        "--model_name_or_path", str(model_dir), "--dataset_dir", str(dataset_dir), "--output_dir", str(tmp_path / "o"),
        "--label_fractions", "0.1,1.0", "--c_values", "0.1,1", "--device", "cpu",
    ])  # fmt: skip
    written = json.loads((tmp_path / "o" / "linear_probe_results.json").read_text())
    assert written["label_fractions"] == results["label_fractions"]
    assert [entry["train_samples"] for entry in written["label_fractions"].values()] == [8, 40]
    for entry in written["label_fractions"].values():
        assert entry["best_c"] in (0.1, 1.0) and (entry["auroc"] is None or 0 <= entry["auroc"] <= 1)


def test_linear_probe_refuses_a_dataset_without_validation(tmp_path):
    path = tmp_path / "data"
    save_synthcxr(generate_synthcxr(num_pretrain=0, num_train=8, num_validation=0, num_test=4, image_size=32), str(path))
    with pytest.raises(ValueError, match="validation split 'validation'"):
        linear_probe.main(["--model_name_or_path", str(save_tiny_sista(tmp_path / "m")), "--dataset_dir", str(path)])


def test_mean_pairwise_cosine_equals_a_pair_loop():
    rng = np.random.default_rng(0)
    embeds = rng.normal(size=(7, 5))
    embeds /= np.linalg.norm(embeds, axis=1, keepdims=True)
    pairs = [embeds[i] @ embeds[j] for i in range(7) for j in range(7) if i != j]
    assert retrieval.mean_pairwise_cosine(embeds.astype(np.float32)) == pytest.approx(np.mean(pairs), abs=1e-6)
    assert retrieval.mean_pairwise_cosine(np.ones((3, 2)) / np.sqrt(2)) == pytest.approx(1.0)
    assert retrieval.mean_pairwise_cosine(embeds[:1]) is None


def train_head_keeping_the_best_step(script, dataset_dir, tmp_path, max_steps, metric) -> tuple[Path, dict]:
    """A head trained with `--validation_split` and `--load_best_model_at_end`, a checkpoint at every step; returns
    its output folder and the last checkpoint's trainer state."""
    output_dir = tmp_path / "head"
    script.main([
        "--model_name_or_path", str(save_tiny_sista(tmp_path / "model")), "--dataset_dir", str(dataset_dir),
        "--output_dir", str(output_dir), "--freeze_encoder", "true", "--max_steps", str(max_steps),
        "--per_device_train_batch_size", "4", "--learning_rate", "0.05", "--validation_split", "validation",
        "--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps", "--save_steps", "1",
        "--load_best_model_at_end", "true", "--metric_for_best_model", metric, "--report_to", "none",
        "--use_cpu", "--disable_tqdm", "true", "--decoder_hidden_size", "32",
    ])  # fmt: skip
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    return output_dir, json.loads((checkpoints[-1] / "trainer_state.json").read_text())


def test_head_keeps_the_step_with_the_lowest_validation_loss(dataset_dir, tmp_path):
    """`--validation_split` + `--load_best_model_at_end`: the saved head is the best checkpoint's, by eval_loss."""
    output_dir, state = train_head_keeping_the_best_step(finetune_detection, dataset_dir, tmp_path, 4, "eval_loss")
    losses = {entry["step"]: entry["eval_loss"] for entry in state["log_history"] if "eval_loss" in entry}
    assert sorted(losses) == [1, 2, 3, 4]
    best = min(losses, key=losses.get)
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best}")
    saved, kept = load_file(output_dir / "model.safetensors"), load_file(output_dir / f"checkpoint-{best}" / "model.safetensors")
    assert saved.keys() == kept.keys() and all((saved[name] == kept[name]).all() for name in saved)


def test_segmentation_head_keeps_the_step_with_the_best_validation_dice(dataset_dir, tmp_path):
    """`--metric_for_best_model dice`: `eval_dice` is the Dice of the binarised validation masks, the best one is kept."""
    finetune_segmentation = load_script("examples/finetune_segmentation.py")
    _, state = train_head_keeping_the_best_step(finetune_segmentation, dataset_dir, tmp_path, 3, "dice")
    dices = {entry["step"]: entry["eval_dice"] for entry in state["log_history"] if "eval_dice" in entry}
    assert sorted(dices) == [1, 2, 3] and all(0 <= value <= 1 for value in dices.values())
    assert state["best_metric"] == pytest.approx(max(dices.values()))
