"""
The real-data path of docs/data_real.md, end to end: small copies of MIMIC-CXR-JPG (with the PhysioNet reports tree
and the metadata, split and CheXpert-labeler csvs in their real column layouts), of MS-CXR's csv, of
CheXpert-v1.0-small and of RSNA Pneumonia are built in a temporary folder, then the commands of the markdown file's
tested blocks run there verbatim, with small-size flags appended: prepare the benchmarks -> prepare -> pre-train ->
prepare CheXpert -> fine-tune a head -> zero-shot and retrieval -> the benchmarks -> release folder. Each step's
outputs are checked, so the documentation cannot drift from the code.
"""

import csv
import gzip
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk
from huggingface_hub import ModelCard

from sista_examples.evaluation.prompts import CHEXPERT_CLASS_PROMPTS
from test_prepare_datasets import (
    CHEXPERT_HEADER,
    MIMIC_METADATA_HEADER,
    chexpert_row,
    quadrant_pixels,
    write_csv,
    write_dicom,
    write_jpeg,
)


REPOSITORY = Path(__file__).resolve().parents[1]
DOCUMENT = REPOSITORY / "docs" / "data_real.md"
TESTED_BLOCK = re.compile(r"<!-- tested: (?P<name>[\w-]+) -->\s*```bash\n(?P<body>.*?)```", re.DOTALL)

# Appended to the documented commands: sizes a CPU runs in seconds (the last value of a repeated flag wins); a list
# gives each command of the block its own flags.
SMALL_FLAGS = {
    "prepare-benchmarks": ["--image_size 32 --num_proc 1", "--image_size 32 --num_proc 1 --per_class 1",
                           "--image_size 32 --num_proc 1"],  # fmt: skip
    "prepare-mimic": "--image_size 32 --num_proc 1",
    "pretrain": "--model_preset tiny --max_steps 3 --per_device_train_batch_size 4 --per_device_eval_batch_size 4 "
    "--bf16 False --report_to none --dataloader_num_workers 0 --disable_tqdm True",
    "prepare-chexpert": "--image_size 32 --num_proc 1",
    "finetune": "--max_steps 2 --per_device_train_batch_size 4 --report_to none --dataloader_num_workers 0 "
    "--disable_tqdm True",
    "evaluate": "--batch_size 8",
    "evaluate-benchmarks": "--batch_size 8",
    "release": "",
}
MIMIC_DIR = Path("physionet.org/files/mimic-cxr-jpg/2.1.0")
REPORTS_DIR = Path("physionet.org/files/mimic-cxr/2.1.0")
MS_CXR_CSV = Path("physionet.org/files/ms-cxr/1.1.0/MS_CXR_Local_Alignment_v1.1.0.csv")
RSNA_DIR = Path("rsna-pneumonia-detection-challenge")
CHEXPERT_LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


def documented_commands() -> dict[str, list[str]]:
    """The tested blocks of docs/data_real.md: name -> its commands (continuation lines joined)."""
    blocks = {}
    for match in TESTED_BLOCK.finditer(DOCUMENT.read_text()):
        body = match.group("body").replace("\\\n", " ")
        blocks[match.group("name")] = [line.strip() for line in body.splitlines() if line.strip()]
    return blocks


# ---------------------------------------------------------------------------------------------------------------------
# The downloaded datasets, in their real layouts
# ---------------------------------------------------------------------------------------------------------------------

FINDINGS = [
    "The lungs are clear. There is no pleural effusion or pneumothorax. Heart size is normal.",
    "Moderate cardiomegaly is stable. There is mild pulmonary vascular congestion.",
    "There is a small left pleural effusion with adjacent atelectasis. No pneumothorax.",
    "Patchy opacity in the right lower lobe. The cardiomediastinal silhouette is normal.",
]
IMPRESSIONS = [
    "No acute cardiopulmonary process.",
    "Cardiomegaly with mild pulmonary edema.",
    "Small left pleural effusion.",
    "Right lower lobe pneumonia.",
]
LONG_FINDINGS = " ".join(f"Line number {index} projects over the right hemithorax unchanged." for index in range(40))


def mimic_report(kind: int, long: bool = False) -> str:
    findings = LONG_FINDINGS if long else FINDINGS[kind]
    return (
        "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n"
        " INDICATION:  ___F with cough  // eval for pneumonia\n\n COMPARISON:  ___\n\n"
        f" FINDINGS:\n\n {findings}\n\n IMPRESSION:\n\n {IMPRESSIONS[kind]}\n"
    )


def write_mimic_cxr(root: Path) -> dict:
    """
    14 patients, one or two studies each; a study has a PA image, a lateral, and for some a second frontal (AP)
    image; one image has a blank ViewPosition. Patients 1-8 train, 9-11 validate, 12-14 test.
    """
    rng = np.random.default_rng(0)
    metadata_rows, split_rows, label_rows = [], [], []
    expected = {"blank_view": None, "test_studies_with_two_frontals": 0, "train_long_reports": 0}
    for patient in range(1, 15):
        subject = f"1000{patient:04d}"
        split = "train" if patient <= 8 else ("validate" if patient <= 11 else "test")
        for study_index in range(1 if patient % 3 else 2):
            study = f"5{patient:03d}{study_index:04d}"
            kind = (patient + study_index) % len(IMPRESSIONS)
            long = split == "train" and patient == 1
            expected["train_long_reports"] += long
            views = ["PA", "LATERAL"] + (["AP"] if patient in (2, 5, 11, 13) else [])
            if patient == 4:
                views.append("")
            expected["test_studies_with_two_frontals"] += split == "test" and "AP" in views
            folder = root / MIMIC_DIR / "files" / f"p{subject[:2]}" / f"p{subject}"
            for view_index, view in enumerate(views):
                dicom_id = f"{patient:08x}-{study_index:08x}-{view_index:08x}-00000000-00000000"
                if view == "":
                    expected["blank_view"] = dicom_id
                pixels = rng.integers(0, 255, size=(48, 40), dtype=np.uint8)
                pixels[: 12 * (kind + 1)] = 255 - 40 * kind  # a visible trace of the report's kind
                write_jpeg(folder / f"s{study}" / f"{dicom_id}.jpg", pixels)
                metadata_rows.append(
                    [dicom_id, subject, study, "CHEST (PA AND LAT)", view, 48, 40, 21800506, 213014.531, "", "", ""]
                )
                split_rows.append([dicom_id, study, subject, split])
            report_folder = root / REPORTS_DIR / "files" / f"p{subject[:2]}" / f"p{subject}"
            report_folder.mkdir(parents=True, exist_ok=True)
            (report_folder / f"s{study}.txt").write_text(mimic_report(kind, long))
            labels = dict.fromkeys(["No Finding", "Cardiomegaly", "Edema", "Pleural Effusion", "Pneumonia"], "")
            labels[["No Finding", "Cardiomegaly", "Pleural Effusion", "Pneumonia"][kind]] = "1.0"
            label_rows.append({"subject_id": subject, "study_id": study, **labels})

    with gzip.open(root / MIMIC_DIR / "mimic-cxr-2.0.0-metadata.csv.gz", "wt", newline="") as file:
        csv.writer(file).writerows([MIMIC_METADATA_HEADER, *metadata_rows])
    with gzip.open(root / MIMIC_DIR / "mimic-cxr-2.0.0-split.csv.gz", "wt", newline="") as file:
        csv.writer(file).writerows([["dicom_id", "study_id", "subject_id", "split"], *split_rows])
    observations = [
        "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
        "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
        "Pneumothorax", "Support Devices",
    ]  # fmt: skip
    header = ["subject_id", "study_id", *observations]
    with gzip.open(root / MIMIC_DIR / "mimic-cxr-2.0.0-chexpert.csv.gz", "wt", newline="") as file:
        csv.writer(file).writerows([header, *([row.get(key, "") for key in header] for row in label_rows)])
    return expected


def write_ms_cxr(root: Path) -> list[str]:
    """MS-CXR's csv on three frontal (PA) images of training patients 3 and 6 (40 x 48 pixels): three phrases."""
    rows = []
    for patient, phrases in ((3, [("Cardiomegaly", "cardiomegaly", (8, 20, 24, 16)),
                                  ("Pleural Effusion", "small right pleural effusion", (2, 34, 10, 10))]),
                             (6, [("Pleural Effusion", "small left pleural effusion", (26, 30, 12, 12))])):  # fmt: skip
        subject, study = f"1000{patient:04d}", f"5{patient:03d}{0:04d}"
        dicom_id = f"{patient:08x}-{0:08x}-{0:08x}-00000000-00000000"
        path = f"files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg"
        for category, text, box in phrases:
            rows.append([dicom_id, category, text, path, *box, 40, 48, "test"])
    header = ["dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width", "image_height",
              "split"]  # fmt: skip
    write_csv(root / MS_CXR_CSV, header, rows)
    return sorted({row[0] for row in rows})


def write_rsna(root: Path) -> None:
    """RSNA Pneumonia: 20 patients at the challenge's 1024 x 1024 (JPEG-baseline DICOMs), every other with a box."""
    rows = []
    for index in range(20):
        patient = f"{index:08x}-0000-4000-8000-{index:012x}"
        target = index % 2
        rows.append([patient, *(["264", "152", "213", "379"] if target else ["", "", "", ""]), str(target)])
        write_dicom(root / RSNA_DIR / "stage_2_train_images" / f"{patient}.dcm", quadrant_pixels(1024, 1024),
                    patient_id=patient, jpeg_baseline=True)  # fmt: skip
    write_csv(root / RSNA_DIR / "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height", "Target"], rows)


def write_chexpert(root: Path) -> None:
    """CheXpert-v1.0-small: 16 training patients (one also with a lateral) and 8 validation patients."""
    rng = np.random.default_rng(1)
    for csv_name, folder, patients in (("train.csv", "train", range(1, 17)), ("valid.csv", "valid", range(1, 9))):
        rows = []
        for patient in patients:
            path = f"CheXpert-v1.0-small/{folder}/patient{patient + (64540 if folder == 'valid' else 0):05d}/study1/"
            positive = CHEXPERT_LABELS[patient % len(CHEXPERT_LABELS)]
            write_jpeg(root / (path + "view1_frontal.jpg"), rng.integers(0, 255, size=(40, 48), dtype=np.uint8))
            labels = {name.replace(" ", "_"): ("1.0" if name == positive else "0.0") for name in CHEXPERT_LABELS}
            rows.append(chexpert_row(path + "view1_frontal.jpg", **labels))
            if patient == 1:
                rows.append(chexpert_row(path + "view2_lateral.jpg", view="Lateral"))
        write_csv(root / "CheXpert-v1.0-small" / csv_name, CHEXPERT_HEADER, rows)


# ---------------------------------------------------------------------------------------------------------------------
# Running the documented commands
# ---------------------------------------------------------------------------------------------------------------------


def run_documented(step: str, workdir: Path, extra: str | None = None) -> subprocess.CompletedProcess:
    """Runs the commands of the block `step` in `workdir`, each as written plus the small-size flags; all must pass."""
    results = []
    commands = documented_commands()[step]
    flags = SMALL_FLAGS[step] if extra is None else extra
    for command, command_flags in zip(commands, flags if isinstance(flags, list) else [flags] * len(commands)):
        arguments = shlex.split(command) + shlex.split(command_flags)
        assert arguments[0] == "python", command
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPOSITORY), str(REPOSITORY / "examples")]),
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        result = subprocess.run(
            [sys.executable, *arguments[1:]], cwd=workdir, env=environment, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{command}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        results.append(result)
    return results


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> tuple[Path, dict]:
    """The user's folder: the downloads, and `examples/` of this checkout (the commands start from the repo root)."""
    root = tmp_path_factory.mktemp("real_data_path")
    expected = write_mimic_cxr(root)
    expected["ms_cxr_images"] = write_ms_cxr(root)
    write_chexpert(root)
    write_rsna(root)
    (root / "examples").symlink_to(REPOSITORY / "examples", target_is_directory=True)
    return root, expected


def test_the_documented_blocks_are_the_ones_this_test_runs():
    assert list(documented_commands()) == list(SMALL_FLAGS)


def test_real_data_path_as_documented(workdir):
    root, expected = workdir

    # 0. the benchmarks: MS-CXR's phrases with their boxes scaled, CheXpert 5x200's draw, RSNA; their hold-out lists
    run_documented("prepare-benchmarks", root)
    ms_cxr = load_from_disk(str(root / "data/ms_cxr"))["test"]
    assert sorted(ms_cxr["phrase"]) == ["cardiomegaly", "small left pleural effusion", "small right pleural effusion"]
    cardiomegaly = ms_cxr[ms_cxr["phrase"].index("cardiomegaly")]
    assert cardiomegaly["image"].size == (27, 32)  # 40 x 48 -> 32 on the longer side
    expected_box = [8 * 27 / 40, 20 * 32 / 48, 24 * 27 / 40, 16 * 32 / 48]
    np.testing.assert_allclose(cardiomegaly["objects"]["bbox"], [expected_box], rtol=1e-5)
    held_out = (root / "data/ms_cxr/excluded_image_ids.txt").read_text().split("\n")
    assert sorted(line for line in held_out if line and not line.startswith("#")) == expected["ms_cxr_images"]
    benchmark = json.loads((root / "data/chexpert_5x200/sista_dataset.json").read_text())
    assert benchmark["num_rows"] == {"test": 5}
    assert json.loads((root / "data/rsna_pneumonia/sista_dataset.json").read_text())["num_rows"]["test"] == 4

    # 1. MIMIC-CXR: splits, skips with reasons (a blank ViewPosition included), laterals left out by design
    output = run_documented("prepare-mimic", root)[0].stdout
    assert re.search(r"mimic_cxr: kept \d+ images \(train=\d+, validation=\d+, test=\d+\)", output), output[-2000:]
    with open(root / "data/mimic_cxr/skipped.csv", newline="") as file:
        skipped = {row["image_id"]: row for row in csv.DictReader(file)}
    assert skipped[expected["blank_view"]]["reason"] == "missing_view_position"
    assert all(row["reason"] == "missing_view_position" for row in skipped.values())
    metadata = json.loads((root / "data/mimic_cxr/sista_dataset.json").read_text())
    assert set(metadata["num_rows"]) == {"train", "validation", "test"}
    assert metadata["excluded_images"] == {"lists": "data/ms_cxr", "num_excluded": 2}
    mimic = load_from_disk(str(root / "data/mimic_cxr"))
    kept = {image_id for split in mimic.values() for image_id in split["image_id"]}
    assert not kept & set(expected["ms_cxr_images"])

    # 2. pre-training: split found, evaluation and dense logging by default, a non-empty summary, reruns refused
    output = run_documented("pretrain", root)[0].stdout
    run = root / "outputs/sista-mimic"
    assert "Pre-training on split 'train' of data/mimic_cxr (found); evaluating on 'validation'." in output
    truncated = re.search(r"(\d+) of (\d+) training reports exceed --max_length 128 tokens", output)
    assert truncated and int(truncated.group(1)) >= expected["train_long_reports"] > 0
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2, 3]
    evaluation = json.loads((run / "eval_results.json").read_text())
    assert evaluation["eval_loss"] > 0 and 0 <= evaluation["retrieval_exact_top1"] <= 1
    summary = re.search(r"SISTA pre-training finished \(3 steps; (.*)\)\.", output)
    assert summary and "loss" in summary.group(1) and "eval_loss" in summary.group(1), output[-2000:]
    assert (run / "loss_curve.png").stat().st_size > 0
    recorded = json.loads((run / "run_arguments.json").read_text())["run"]
    assert recorded["train_split"] == {"value": "train", "source": "dataset"}
    with pytest.raises(AssertionError, match="--overwrite_output_dir"):
        run_documented("pretrain", root)

    # 3. CheXpert
    output = run_documented("prepare-chexpert", root)[0].stdout
    assert re.search(r"chexpert: kept \d+ images", output)
    excluded = json.loads((root / "data/chexpert/sista_dataset.json").read_text())["excluded_images"]
    assert excluded == {"lists": "data/chexpert_5x200", "num_excluded": 5}

    # 4. a CheXpert head on 1% of the labels, raised to --min_train_samples: the fraction used is the one reported
    run_documented("finetune", root)
    classification = json.loads((root / "outputs/chexpert-1pct/classification_results.json").read_text())
    num_train_rows = json.loads((root / "data/chexpert/sista_dataset.json").read_text())["num_rows"]["train"]
    assert classification["num_train_samples"] == 8
    assert classification["label_fraction"] == pytest.approx(8 / num_train_rows)
    assert classification["requested_label_fraction"] == 0.01
    assert set(classification["metrics"]["per_class_auroc"]) == set(CHEXPERT_LABELS)

    # 5. zero-shot with the CheXpert prompt sets; retrieval grouped by study, K >= gallery flagged
    run_documented("evaluate", root)
    zero_shot = json.loads((root / "outputs/evaluation/zero_shot_results.json").read_text())
    assert zero_shot["prompts"] == {name: CHEXPERT_CLASS_PROMPTS[name] for name in CHEXPERT_LABELS}
    retrieval = json.loads((root / "outputs/evaluation/retrieval_results.json").read_text())
    assert retrieval["num_studies"] == retrieval["num_pairs"] - expected["test_studies_with_two_frontals"]
    assert retrieval["ks_covering_gallery"] == [k for k in (1, 5, 10) if k >= retrieval["num_pairs"]] != []
    table = (root / "outputs/evaluation/retrieval_results.md").read_text()
    assert "at least the gallery size" in table and "any item of its study" in table

    # 5a. the benchmarks: 5-way accuracy and macro-F1, category precision@K, RSNA AUROC/accuracy, MS-CXR per category
    run_documented("evaluate-benchmarks", root)
    benchmarks = root / "outputs/benchmarks"
    chexpert_zero_shot = json.loads((benchmarks / "chexpert_5x200/zero_shot_results.json").read_text())
    assert set(chexpert_zero_shot["multiclass"]) >= {"accuracy", "macro_f1", "confusion_matrix"}
    chexpert_retrieval = json.loads((benchmarks / "chexpert_5x200/retrieval_results.json").read_text())
    assert set(chexpert_retrieval["image_to_text"]["overall"]) >= {"P@1", "P@5", "P@10", "chance"}
    rsna = json.loads((benchmarks / "rsna_pneumonia/zero_shot_results.json").read_text())
    assert 0 <= rsna["accuracy"] <= 1 and rsna["prompts"]["Lung Opacity"]["positive"][0] == "pneumonia."
    grounding = json.loads((benchmarks / "ms_cxr/phrase_grounding_results.json").read_text())
    assert set(grounding["per_category"]) == {"Cardiomegaly", "Pleural Effusion"}
    averages = set(grounding["category_average"])
    assert {"word_to_patch_cnr", "phrase_to_patch_miou", "text_prior_baseline_cnr"} <= averages

    # 6. the head's release folder: names instead of paths, the data's terms, the classification results
    run_documented("release", root)
    release = root / "outputs/release-chexpert-1pct"
    card = ModelCard.load(release / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "other" and "physionet" in data["license_name"]
    assert data["datasets"] == ["CheXpert"]
    index_names = [result["dataset"]["name"] for result in data["model-index"][0]["results"]]
    assert index_names and set(index_names) == {"CheXpert"}
    assert "These weights derive from MIMIC-CXR**, credentialed data" in card.text and "Synthetic data" not in card.text
    assert "Classification" in card.text and "auroc" in card.text.lower()
    assert str(root) not in card.content and "data/" not in card.content.split("---")[1]
