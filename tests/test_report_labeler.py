# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Tests of the rule-based report labeler and the label-vector embeddings
(examples/sista_examples/data/report_labeler.py) on verbatim IU X-ray reports (tests/fixtures/iu_xray)."""

import importlib.util
import io
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import load_script
from sista_examples.data.report_labeler import (
    NO_FINDING,
    OBSERVATIONS,
    SAME_FINDINGS_THRESHOLD,
    UNCERTAIN_POLICIES,
    embed_reports,
    label_embeddings,
    label_reports,
)


# The labeler needs the `examples` extra's medspacy; the embeddings alone do not.
requires_medspacy = pytest.mark.skipif(
    importlib.util.find_spec("medspacy") is None, reason="needs medspacy (pip install medspacy)"
)


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "iu_xray"
NORMAL_STUDIES = ("1", "3", "11", "737", "1099", "1025", "1149")

# Hand-derived from each report's verbatim FINDINGS and IMPRESSION; every observation not listed is NaN.
EXPECTED_LABELS = {
    # "no pulmonary edema ... no focal consolidation ... no XXXX of a pleural effusion ... no evidence of
    # pneumothorax. Normal chest x-XXXX."
    "1": {"Edema": 0, "Consolidation": 0, "Pleural Effusion": 0, "Pneumothorax": 0, NO_FINDING: 1},
    # "No displaced rib fractures, pneumothorax, or pleural effusion identified. Well-expanded and clear lungs."
    "3": {"Fracture": 0, "Pneumothorax": 0, "Pleural Effusion": 0, NO_FINDING: 1},
    # "Lungs are clear. No pneumothorax or pleural effusion. ... No acute cardiopulmonary findings."
    "11": {"Pneumothorax": 0, "Pleural Effusion": 0, NO_FINDING: 1},
    # "pulmonary vascular engorgement appear within limits of normal" is a negated congestion.
    "737": {"Edema": 0, "Consolidation": 0, "Pleural Effusion": 0, "Pneumothorax": 0, NO_FINDING: 1},
    # Sternotomy and CABG changes, no device named; "No focal airspace consolidation, pleural effusions or
    # pneumothorax."
    "1099": {"Consolidation": 0, "Pleural Effusion": 0, "Pneumothorax": 0, NO_FINDING: 1},
    # A calcified granuloma is incidental: the report stays normal.
    "1025": {"Consolidation": 0, "Pneumothorax": 0, "Pleural Effusion": 0, NO_FINDING: 1},
    # "Several calcified granulomas ... Negative for pneumothorax, pleural effusion or focal airspace consolidation."
    "1149": {"Pneumothorax": 0, "Pleural Effusion": 0, "Consolidation": 0, NO_FINDING: 1},
    # "Slight cardiomegaly. Clear lungs."
    "2221": {"Cardiomegaly": 1},
    # "Slight cardiomegaly. Lungs are clear no effusions or edema."
    "981": {"Cardiomegaly": 1, "Pleural Effusion": 0, "Edema": 0},
    # "Small pleural effusion is identified. Small bilateral pleural effusions."
    "2747": {"Pleural Effusion": 1},
    # "left basilar airspace opacity ... Right basilar atelectasis ... No pneumothorax or pleural effusions ...
    # concerning for pneumonia."
    "3983": {"Lung Opacity": 1, "Atelectasis": 1, "Pneumothorax": 0, "Pleural Effusion": 0, "Pneumonia": -1},
    # "PICC line catheter ... Heart is not enlarged ... No pneumothorax ... patchy density ... right-sided pleural
    # effusion ... strongly suggestive of acute pneumonia"
    "677": {
        "Support Devices": 1,
        "Cardiomegaly": 0,
        "Pneumothorax": 0,
        "Lung Opacity": 1,
        "Pleural Effusion": 1,
        "Pneumonia": -1,
    },
    # "No pneumothorax. Pacemaker defibrillator tips ... Lungs are clear": a device does not rule out No Finding.
    "1749": {"Pneumothorax": 0, "Support Devices": 1, NO_FINDING: 1},
    # Hyperexpanded, emphysematous lungs: abnormal, though no CheXpert observation; "No mass or focal opacities".
    "1081": {"Lung Lesion": 0, "Lung Opacity": 0},
}
STUDIES = tuple(EXPECTED_LABELS)


@pytest.fixture(scope="module")
def fixture_reports():
    bench = load_script("benchmarks/bench_report_similarity.py")
    return {study: bench.parse_iu_study((FIXTURES / f"{study}.xml").read_bytes())[0] for study in STUDIES}


@pytest.fixture(scope="module")
def fixture_labels(fixture_reports):
    return dict(zip(STUDIES, label_reports([fixture_reports[study] for study in STUDIES])))


def expected_row(expected: dict) -> np.ndarray:
    row = np.full(len(OBSERVATIONS), np.nan)
    for name, value in expected.items():
        row[OBSERVATIONS.index(name)] = value
    return row


def positive_set_key(row, class_names, uncertain: str):
    """Naive oracle: the findings a label row asserts, as a hashable key (None: asserts nothing)."""
    has_no_finding_column = NO_FINDING in class_names
    findings = []
    for name, value in zip(class_names, row):
        if name == NO_FINDING:
            continue
        if value == 1 or (value == -1 and uncertain == "positive"):
            findings.append((name, "present"))
        elif value == -1 and uncertain == "separate":
            findings.append((name, "uncertain"))
    if has_no_finding_column:
        normal = row[list(class_names).index(NO_FINDING)] == 1
    else:
        normal = not any(state == "present" for _, state in findings)
    key = frozenset(findings) | ({"normal"} if normal else set())
    return key or None


@requires_medspacy
@pytest.mark.parametrize("study", STUDIES)
def test_labels_of_verbatim_reports(fixture_labels, study):
    np.testing.assert_array_equal(fixture_labels[study], expected_row(EXPECTED_LABELS[study]))


@requires_medspacy
def test_normal_phrasings_match_each_other_and_nothing_else(fixture_reports):
    embeddings = dict(zip(STUDIES, embed_reports([fixture_reports[study] for study in STUDIES])))
    for first, second in itertools.combinations(STUDIES, 2):
        first_key, second_key = (
            positive_set_key(expected_row(EXPECTED_LABELS[study]), OBSERVATIONS, "separate")
            for study in (first, second)
        )
        same = first_key is not None and first_key == second_key
        similarity = float(embeddings[first] @ embeddings[second])
        if first in NORMAL_STUDIES and second in NORMAL_STUDIES:
            assert similarity == pytest.approx(1.0, abs=1e-6), (first, second)
        assert (similarity >= SAME_FINDINGS_THRESHOLD) == bool(same), (first, second, similarity)
    # Cardiomegaly alone, written two ways, with different negated findings: the same findings.
    assert float(embeddings["2221"] @ embeddings["981"]) == pytest.approx(1.0, abs=1e-6)
    # Emphysema is no CheXpert observation but rules out No Finding: the report matches nothing.
    np.testing.assert_array_equal(embeddings["1081"], 0.0)


@requires_medspacy
def test_empty_reports_get_no_labels_and_zero_embeddings():
    labels = label_reports(["", "   ", None])
    assert np.isnan(labels).all()
    np.testing.assert_array_equal(label_embeddings(labels, OBSERVATIONS), 0.0)


@requires_medspacy
def test_worker_processes_keep_the_order(fixture_reports):
    texts = [fixture_reports[study] for study in STUDIES]
    np.testing.assert_array_equal(label_reports(texts, batch_size=2, num_workers=2), label_reports(texts))


@pytest.mark.parametrize("uncertain", UNCERTAIN_POLICIES)
def test_same_vector_iff_same_findings_on_random_labels(uncertain):
    rng = np.random.default_rng(0)
    labels = rng.choice([1.0, 0.0, -1.0, np.nan], size=(300, len(OBSERVATIONS)), p=[0.06, 0.2, 0.04, 0.7])
    no_finding = OBSERVATIONS.index(NO_FINDING)
    labels[:, no_finding] = np.where(rng.random(300) < 0.4, 1.0, np.nan)
    labels[:40] = labels[40:80]  # guaranteed duplicates
    embeddings = label_embeddings(labels, OBSERVATIONS, uncertain)
    keys = [positive_set_key(row, OBSERVATIONS, uncertain) for row in labels]
    similarity = embeddings @ embeddings.T
    for first, second in itertools.combinations(range(len(labels)), 2):
        same = keys[first] is not None and keys[first] == keys[second]
        assert (similarity[first, second] >= SAME_FINDINGS_THRESHOLD) == same, (first, second)
    norms = np.linalg.norm(embeddings, axis=1)
    np.testing.assert_allclose(norms, [0.0 if key is None else 1.0 for key in keys], atol=1e-6)


CHEXPERT_CSV = (
    "subject_id,study_id," + ",".join(OBSERVATIONS) + "\n"
    # normal; normal with a device; cardiomegaly + uncertain edema; cardiomegaly + negated edema; normal again
    + "\n".join(
        f"1,{study}," + ",".join(values.get(name, "") for name in OBSERVATIONS)
        for study, values in enumerate(
            [
                {NO_FINDING: "1.0"},
                {NO_FINDING: "1.0", "Support Devices": "1.0"},
                {"Cardiomegaly": "1.0", "Edema": "-1.0"},
                {"Cardiomegaly": "1.0", "Edema": "0.0"},
                {NO_FINDING: "1.0", "Pneumothorax": "0.0"},
            ]
        )
    )
    + "\n"
)


@pytest.mark.parametrize(
    "uncertain, cardiomegaly_pair_same", [("positive", False), ("negative", True), ("separate", False)]
)
def test_label_encoder_on_a_chexpert_csv(uncertain, cardiomegaly_pair_same):
    frame = pd.read_csv(io.StringIO(CHEXPERT_CSV))[list(OBSERVATIONS)]
    embeddings = label_embeddings(frame, uncertain=uncertain)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 4] == pytest.approx(1.0)  # normal, normal
    assert similarity[0, 1] < SAME_FINDINGS_THRESHOLD  # a device is a finding of its own
    assert similarity[0, 3] < SAME_FINDINGS_THRESHOLD
    assert (similarity[2, 3] >= SAME_FINDINGS_THRESHOLD) == cardiomegaly_pair_same
    # Row 3 asserts cardiomegaly alone: one unit coordinate, whatever the policy.
    assert np.count_nonzero(embeddings[3]) == 1 and embeddings[3].max() == pytest.approx(1.0)
    np.testing.assert_allclose(embeddings, label_embeddings(frame.to_numpy(), list(OBSERVATIONS), uncertain))


def test_label_encoder_on_multi_hot_classes_without_a_no_finding_column():
    class_names = ["cardiomegaly", "right_effusion", "left_effusion"]
    labels = np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 1]])
    embeddings = label_embeddings(labels, class_names)
    similarity = embeddings @ embeddings.T
    keys = [frozenset(np.flatnonzero(row)) for row in labels]
    for first, second in itertools.combinations(range(len(labels)), 2):
        assert (similarity[first, second] >= SAME_FINDINGS_THRESHOLD) == (keys[first] == keys[second])
    # An all-zero row is normal: the no-finding dimension after the 3 classes (then 3 uncertain dimensions).
    np.testing.assert_array_equal(embeddings[0], [0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(label_embeddings(labels, class_names, uncertain="positive")[0], [0, 0, 0, 1])


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="`labels` values must be 1, 0, -1 or NaN, got 2.0 at row 0, column 1"):
        label_embeddings(np.array([[0, 2]]))
    with pytest.raises(ValueError, match="`uncertain` must be one of"):
        label_embeddings(np.zeros((1, 3)), uncertain="ones")
    with pytest.raises(ValueError, match="`class_names` must name the 3 label columns, got 2"):
        label_embeddings(np.zeros((1, 3)), ["a", "b"])
    with pytest.raises(ValueError, match=r"`labels` must have shape \(N, num_classes\)"):
        label_embeddings(np.zeros(3))
    with pytest.raises(TypeError, match="`texts` must be a sequence of report strings, got a single str"):
        label_reports("No acute disease.")
    with pytest.raises(TypeError, match="got int at row 1"):
        label_reports(["No acute disease.", 3])
    with pytest.raises(ValueError, match="`num_workers` must be a positive integer, got 0"):
        label_reports(["No acute disease."], num_workers=0)
