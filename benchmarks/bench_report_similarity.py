#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Benchmark of SIA's false-negative detector on real reports: IU X-ray reports against their MeSH terms.

Each study's FINDINGS and IMPRESSION are cleaned with `processing_sista.clean_report`, as
`prepare_datasets.py` cleans reports. Two studies have "the same findings" when they have the same set of
significant MeSH finding groups (`MESH_FINDING_GROUPS`; every other MeSH term, such as spine, calcinosis or
granuloma, is ignored, so a study with only such terms has the empty set of a normal one). For each report
encoder, at its default threshold and over a sweep, the detector "cosine >= threshold" is scored over all
pairs of studies:

* fraction of pairs flagged; precision (flagged pairs with the same findings); recall (pairs with the
  same findings that are flagged); normal-normal recall (flagged pairs among the pairs of studies whose
  only MeSH term is `normal`).

Encoders: ``labeler`` (`sista_examples/data/report_labeler.py`: label vector of the rule-based labeler,
threshold `SAME_FINDINGS_THRESHOLD`), ``tfidf`` and ``minilm`` (`sista_examples/data/report_embeddings.py`, at
their calibrated defaults `DEFAULT_THRESHOLDS`, which `pretrain.py` uses). Also written: the labeler's agreement with the MeSH groups per observation and
its speed on one core.

    python benchmarks/bench_report_similarity.py ../shared/data/iu_xray_reports_dev.tgz
    python benchmarks/bench_report_similarity.py data/iu_xray_reports.tgz --encoders labeler tfidf

The reports are the Indiana University Chest X-ray Collection (CC BY-NC-ND 4.0; Demner-Fushman et al.,
JAMIA 2016).
"""

import argparse
import importlib.util
import json
import logging
import tarfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from processing_sista import clean_report


logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TGZ = REPO_ROOT.parent / "shared" / "data" / "iu_xray_reports_dev.tgz"
LABELER_PATH = REPO_ROOT / "examples" / "sista_examples" / "data" / "report_labeler.py"
ENCODERS = ("labeler", "tfidf", "minilm")
SWEEP = tuple(sorted({round(float(value), 2) for value in np.arange(0.1, 1.0, 0.05)} | {0.92, 0.97, 0.99}))

# Significant finding groups of the issue: MeSH main headings (the text before the first `/`).
MESH_FINDING_GROUPS = {
    "cardiomegaly": ("Cardiomegaly",),
    "opacity": ("Opacity", "Airspace Disease", "Density", "Infiltrate"),
    "atelectasis": ("Pulmonary Atelectasis",),
    "effusion": ("Pleural Effusion", "Costophrenic Angle"),
    "edema": ("Pulmonary Edema", "Pulmonary Congestion"),
    "consolidation": ("Consolidation", "Pneumonia"),
    "pneumothorax": ("Pneumothorax",),
    "nodule": ("Nodule", "Mass"),
    "device": (
        "Catheters, Indwelling",
        "Tube, Inserted",
        "Implanted Medical Device",
        "Surgical Instruments",
        "Stents",
    ),
    "emphysema": (
        "Emphysema",
        "Pulmonary Emphysema",
        "Bullous Emphysema",
        "Pulmonary Disease, Chronic Obstructive",
        "Lung, Hyperlucent",
    ),
    "fracture": ("Fractures, Bone",),
    "hiatal hernia": ("Hernia, Hiatal",),
    "fibrosis": ("Pulmonary Fibrosis", "Fibrosis"),
}
GROUP_OF_HEADING = {heading: group for group, headings in MESH_FINDING_GROUPS.items() for heading in headings}
# MeSH group -> the labeler observations that stand for it, for the per-observation agreement table.
GROUP_OBSERVATIONS = {
    "cardiomegaly": ("Cardiomegaly",),
    "opacity": ("Lung Opacity",),
    "atelectasis": ("Atelectasis",),
    "effusion": ("Pleural Effusion",),
    "edema": ("Edema",),
    "consolidation": ("Consolidation", "Pneumonia"),
    "pneumothorax": ("Pneumothorax",),
    "nodule": ("Lung Lesion",),
    "device": ("Support Devices",),
    "fracture": ("Fracture",),
}


def load_module(path: Path, name: str):
    """Import a module from its file (the examples are scripts, not an installed package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_iu_study(xml_text) -> tuple[str, list[str]]:
    """The cleaned report text (FINDINGS + IMPRESSION through `clean_report`) and the MeSH terms of one
    IU X-ray XML file."""
    root = ElementTree.fromstring(xml_text)
    sections = {node.get("Label"): node.text or "" for node in root.iter("AbstractText")}
    raw = f"FINDINGS: {sections.get('FINDINGS', '')}\nIMPRESSION: {sections.get('IMPRESSION', '')}"
    mesh = [node.text.strip() for node in root.iter("major") if node.text and node.text.strip()]
    return clean_report(raw).text, mesh


def read_iu_reports(tgz_path) -> tuple[list[dict], dict]:
    """Studies of an IU X-ray tgz as `{"id", "text", "mesh"}`, in file-name order. Studies whose cleaned
    text is empty are skipped and counted by reason."""
    studies, skipped = [], {}
    with tarfile.open(tgz_path) as archive:
        for member in sorted(archive.getmembers(), key=lambda member: member.name):
            if not (member.isfile() and member.name.endswith(".xml")):
                continue
            text, mesh = parse_iu_study(archive.extractfile(member).read())
            if not text:
                skipped["empty FINDINGS and IMPRESSION"] = skipped.get("empty FINDINGS and IMPRESSION", 0) + 1
                continue
            studies.append({"id": Path(member.name).stem, "text": text, "mesh": mesh})
    return studies, skipped


def mesh_finding_groups(mesh_terms) -> frozenset:
    """The set of significant finding groups of a study's MeSH terms (other terms are ignored)."""
    headings = (term.split("/")[0].strip() for term in mesh_terms)
    return frozenset(GROUP_OF_HEADING[heading] for heading in headings if heading in GROUP_OF_HEADING)


def is_normal_only(mesh_terms) -> bool:
    return [term.strip().lower() for term in mesh_terms] == ["normal"]


def pair_metrics(embeddings: np.ndarray, groups: list, normal: np.ndarray, thresholds) -> list[dict]:
    """Fraction flagged, precision, recall and normal-normal recall of `cosine >= threshold` over all
    unordered pairs of distinct studies."""
    upper = np.triu_indices(len(groups), k=1)
    similarity = (embeddings @ embeddings.T)[upper]
    index_of = {}
    group_ids = np.array([index_of.setdefault(group, len(index_of)) for group in groups])
    same = (group_ids[:, None] == group_ids[None, :])[upper]
    normal_pair = (normal[:, None] & normal[None, :])[upper]
    rows = []
    for threshold in thresholds:
        flagged = similarity >= threshold
        true_positives = int((flagged & same).sum())
        rows.append(
            {
                "threshold": float(threshold),
                "fraction_flagged": float(flagged.mean()),
                # None (JSON null) where undefined: no pair flagged, or no normal-normal pair.
                "precision": true_positives / int(flagged.sum()) if flagged.any() else None,
                "recall": true_positives / max(int(same.sum()), 1),
                "normal_normal_recall": float(flagged[normal_pair].mean()) if normal_pair.any() else None,
            }
        )
    return rows


def observation_agreement(labels: np.ndarray, observations, groups: list, uncertain_counts: bool) -> list[dict]:
    """Per MeSH group: the reports where the labeler finds one of its observations against the studies
    with that group; last, No Finding against the studies with no group."""
    rows = []
    for group, group_observations in [*GROUP_OBSERVATIONS.items(), (None, ("No Finding",))]:
        values = labels[:, [observations.index(name) for name in group_observations]]
        predicted = ((values == 1) | ((values == -1) & uncertain_counts)).any(axis=1)
        reference = np.array([not study if group is None else group in study for study in groups])
        true_positives = int((predicted & reference).sum())
        rows.append(
            {
                "observation": " or ".join(group_observations),
                "mesh_group": "(none)" if group is None else group,
                "mesh_studies": int(reference.sum()),
                "labeler_positive": int(predicted.sum()),
                "precision": true_positives / max(int(predicted.sum()), 1),
                "recall": true_positives / max(int(reference.sum()), 1),
            }
        )
    return rows


def text_encoder_embeddings(name: str, texts: list) -> np.ndarray:
    from sista_examples.data.report_embeddings import load_report_encoder

    encoder = load_report_encoder(name)
    if hasattr(encoder, "fit"):
        encoder.fit(texts)
    return encoder(texts)


def _metric_row(name: str, row: dict) -> str:
    def number(value):
        return "n/a" if value is None else f"{value:.3f}"

    return (
        f"| {name} | {row['threshold']:.2f} | {row['fraction_flagged']:.2%} | {number(row['precision'])} | "
        f"{number(row['recall'])} | {number(row['normal_normal_recall'])} |"
    )


def format_markdown(results: dict) -> str:
    table_header = [
        "| encoder | threshold | pairs flagged | precision | recall | normal-normal recall |",
        "|---|---|---|---|---|---|",
    ]
    lines = [
        "# SIA's false-negative detector on real reports",
        "",
        f"IU X-ray development reports: {results['num_studies']} studies "
        f"({results['num_normal_only']} with `normal` as their only MeSH term), "
        f"{results['num_pairs']} pairs, {results['fraction_same_pairs']:.1%} with the same set of significant MeSH "
        f"finding groups, {results['fraction_normal_pairs']:.1%} normal-normal. "
        "Produced by `benchmarks/bench_report_similarity.py`.",
        "",
        "## At each encoder's default threshold",
        "",
        *table_header,
    ]
    for name, encoder in results["encoders"].items():
        lines.append(_metric_row(name, encoder["default"]))
    lines += ["", "## Threshold sweep", "", *table_header]
    for name, encoder in results["encoders"].items():
        lines.extend(_metric_row(name, row) for row in encoder["sweep"])
    if "labeler_agreement" in results:
        policy = results["labeler_uncertain_policy"]
        lines += [
            "",
            "## Labeler against the MeSH groups, per observation",
            "",
            "Labeler positive: labeled 1"
            + (" or -1" if policy == "positive" else " (uncertain mentions not counted)")
            + f", as the default uncertainty policy `{policy}` embeds them. No Finding is "
            "compared with the empty group set (a device does not rule out No Finding, but is a MeSH group).",
            "",
            "| observation | MeSH group | MeSH studies | labeler positive | precision | recall |",
            "|---|---|---|---|---|---|",
        ]
        for row in results["labeler_agreement"]:
            lines.append(
                f"| {row['observation']} | {row['mesh_group']} | {row['mesh_studies']} | {row['labeler_positive']} | "
                f"{row['precision']:.3f} | {row['recall']:.3f} |"
            )
        lines += [
            "",
            f"Labeler speed: {results['labeler_reports_per_second']:.0f} reports/s on one process "
            "(`label_reports`, spaCy pipeline already built).",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "tgz", nargs="?", default=str(DEFAULT_TGZ), help="IU X-ray reports tgz (ecgen-radiology/*.xml)."
    )
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    parser.add_argument(
        "--output",
        default=str(REPO_ROOT / "docs" / "results" / "report_similarity_real"),
        help="Output path without suffix: .json and .md are written.",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not Path(args.tgz).is_file():
        parser.error(f"`tgz` must be the IU X-ray reports .tgz (ecgen-radiology/*.xml), got {args.tgz!r}: no file.")

    studies, skipped = read_iu_reports(args.tgz)
    for reason, count in skipped.items():
        logger.warning("Skipped %d studies: %s.", count, reason)
    texts = [study["text"] for study in studies]
    groups = [mesh_finding_groups(study["mesh"]) for study in studies]
    normal = np.array([is_normal_only(study["mesh"]) for study in studies])
    num_pairs = len(studies) * (len(studies) - 1) // 2
    group_counts = {}
    for group in groups:
        group_counts[group] = group_counts.get(group, 0) + 1
    results = {
        "data": Path(args.tgz).name,
        "num_studies": len(studies),
        "skipped": skipped,
        "num_normal_only": int(normal.sum()),
        "num_pairs": num_pairs,
        "fraction_same_pairs": sum(n * (n - 1) // 2 for n in group_counts.values()) / num_pairs,
        "fraction_normal_pairs": int(normal.sum()) * (int(normal.sum()) - 1) // 2 / num_pairs,
        "mesh_finding_groups": MESH_FINDING_GROUPS,
        "encoders": {},
    }
    for name in args.encoders:
        start = time.perf_counter()
        if name == "labeler":
            labeler = load_module(LABELER_PATH, "report_labeler")
            labeler.label_reports(texts[:8])  # builds the pipeline outside the timing
            start = time.perf_counter()
            labels = labeler.label_reports(texts)
            seconds = time.perf_counter() - start
            embeddings = labeler.label_embeddings(labels, labeler.OBSERVATIONS)
            threshold = labeler.SAME_FINDINGS_THRESHOLD
            results["labeler_reports_per_second"] = len(texts) / seconds
            results["labeler_uncertain_policy"] = labeler.DEFAULT_UNCERTAIN_POLICY
            results["labeler_agreement"] = observation_agreement(
                labels, list(labeler.OBSERVATIONS), groups, labeler.DEFAULT_UNCERTAIN_POLICY == "positive"
            )
        else:
            from sista_examples.data.report_embeddings import default_threshold

            embeddings = text_encoder_embeddings(name, texts)
            threshold = default_threshold(name)
            seconds = time.perf_counter() - start
        default, *sweep = pair_metrics(embeddings, groups, normal, (threshold, *SWEEP))
        results["encoders"][name] = {"seconds": seconds, "default": default, "sweep": sweep}
        logger.info("%s (%.1f s)", _metric_row(name, default), seconds)

    markdown = format_markdown(results)
    print(markdown)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown)
    logger.info("Wrote %s.json and %s.md", output, output)


if __name__ == "__main__":
    main()
