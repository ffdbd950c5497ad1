"""Fast tests of the reproduction-study tooling: aggregation, table, plots, arguments (no training)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script


reproduce = load_script("research/reproduce.py")


def fake_records():
    """Two objectives x 3 seeds of classification at two fractions, plus one label-free task."""
    values = {
        ("clip", 0.01): [0.60, 0.62, 0.64],
        ("clip", 1.0): [0.80, 0.81, 0.85],
        ("sista", 0.01): [0.70, 0.66, 0.68],
        ("sista", 1.0): [0.90, 0.88, 0.86],
    }
    records = []
    for (objective, fraction), aurocs in values.items():
        for seed, auroc in enumerate(aurocs):
            records.append({"objective": objective, "seed": seed, "task": "classification",
                            "label_fraction": fraction, "metrics": {"auroc": auroc, "accuracy": 0.5}})
    for objective, accuracies in {"clip": [0.10, 0.30], "sista": [0.40, 0.40]}.items():
        for seed, accuracy in enumerate(accuracies):
            records.append({"objective": objective, "seed": seed, "task": "grounding", "label_fraction": None,
                            "metrics": {"pointing_accuracy": accuracy}})
    records.append({"objective": "clip", "seed": 0, "task": "pretrain", "label_fraction": None, "wall_time_s": 1.0})
    return records, values


def test_summary_mean_std_equals_hand_computation():
    records, values = fake_records()
    summary = reproduce.summarize(records)
    for (objective, fraction), aurocs in values.items():
        entry = summary["classification"]["auroc"][f"{fraction:g}"][objective]
        mean = sum(aurocs) / 3
        std = math.sqrt(sum((value - mean) ** 2 for value in aurocs) / 2)  # sample std, ddof=1
        assert entry["mean"] == pytest.approx(mean, abs=1e-12)
        assert entry["std"] == pytest.approx(std, abs=1e-12)
        assert entry["n"] == 3 and entry["seeds"] == [0, 1, 2]
    grounding = summary["grounding"]["pointing_accuracy"]["-"]
    assert grounding["clip"]["mean"] == pytest.approx(0.2) and grounding["clip"]["std"] == pytest.approx(math.sqrt(0.02))
    assert grounding["sista"]["std"] == pytest.approx(0.0)
    assert "pretrain" not in summary


def test_markdown_table_cells():
    records, _ = fake_records()
    table = reproduce.markdown_table(reproduce.summarize(records), ["clip", "sista"])
    lines = table.splitlines()
    assert lines[0] == "| task | metric | labels | clip | sista | reference |"
    # clip 1%: mean 0.62, std 0.02; sista 100%: mean 0.88, std 0.02
    assert "| classification | linear-probe AUROC | 1% | 0.620 ± 0.020 | 0.680 ± 0.020 | — |" in lines
    assert "| classification | linear-probe AUROC | 100% | 0.820 ± 0.026 | 0.880 ± 0.020 | — |" in lines
    assert "| grounding | pointing game | — | 0.200 ± 0.141 | 0.400 ± 0.000 | — |" in lines


def test_paired_difference_matches_a_hand_t_interval():
    records, values = fake_records()
    summary = reproduce.summarize(records)
    entry = reproduce.paired_difference(summary, "classification", "auroc", "0.01", "sista", "clip")
    differences = [0.10, 0.04, 0.04]  # sista - clip, seed by seed
    mean = sum(differences) / 3
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / 2)
    half = 4.302652729911275 * std / math.sqrt(3)  # t(0.975, df=2)
    assert entry["differences"] == pytest.approx(differences)
    assert entry["mean"] == pytest.approx(mean) and entry["ci95"] == pytest.approx([mean - half, mean + half])
    assert reproduce.format_difference(entry) == f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]"
    assert reproduce.paired_difference(summary, "classification", "auroc", "0.01", "sta", "clip") is None


def test_sign_flip_p_value_counts_sign_patterns_by_hand():
    # 3 differences, 8 sign patterns; |sum| >= |0.1 - 0.04 + 0.04| = 0.1 for sums 0.18, 0.1, 0.1 and their negatives
    assert reproduce.sign_flip_p_value([0.1, -0.04, 0.04]) == pytest.approx(6 / 8)
    # all of one sign: only that pattern and its mirror reach the observed mean
    assert reproduce.sign_flip_p_value([0.1, 0.04, 0.04, 0.02, 0.03]) == pytest.approx(2 / 32)
    assert reproduce.sign_flip_p_value([0.1]) is None
    assert reproduce.difference_entry([0.1, 0.04, 0.04, 0.02, 0.03])["sign_flip_p"] == pytest.approx(2 / 32)


def test_segmentation_headline_keeps_dice_per_lesion_size():
    results = {"metrics": {"dice": 0.5, "mean_image_dice": 0.6, "dice_small": 0.3, "num_small": 12,
                           "dice_nodule": 0.2, "num_images": 9, "test_foreground_fraction": 0.1}}
    assert reproduce.headline_from_results("segmentation", results) == {
        "dice": 0.5, "mean_image_dice": 0.6, "dice_small": 0.3, "num_small": 12, "dice_nodule": 0.2, "num_images": 9}


def test_claim_verdicts_follow_the_interval():
    records = []
    for seed, (clip, sista) in enumerate([(0.50, 0.60), (0.52, 0.61), (0.55, 0.66)]):  # sista always ~+0.1
        for objective, value in (("clip", clip), ("sista", sista)):
            records.append({"objective": objective, "seed": seed, "task": "segmentation", "label_fraction": 0.01,
                            "metrics": {"dice": value}})
            records.append({"objective": objective, "seed": seed, "task": "segmentation", "label_fraction": 1.0,
                            "metrics": {"dice": value + (0.3 if objective == "clip" else 0.2)}})
        records.append({"objective": "sista", "seed": seed, "task": "grounding", "label_fraction": None,
                        "metrics": {"pointing_accuracy": 0.5, "pointing_random_baseline": 0.03,
                                    "pointing_fixed_point_baseline": 0.4, "pointing_oracle": 0.7,
                                    "pointing_text_prior": 0.45, "pointing_shuffled_image": 0.2 + 0.05 * seed}})
    claims = {(c["claim"], c["task"], c["labels"], c["comparison"]): c["verdict"]
              for c in reproduce.claim_verdicts(reproduce.summarize(records))}
    assert claims[("SISTA beats CLIP", "segmentation", "1%", "sista − clip")] == "holds"
    # at 100% sista - clip = (+0.1 - 0.1) per seed: the interval straddles 0
    assert claims[("SISTA beats CLIP", "segmentation", "100%", "sista − clip")] == "not shown"
    assert claims[("gains largest with the fewest labels", "segmentation", "—",
                   "(sista − clip at 1%) − (at 100%)")] == "holds"
    assert claims[("SISTA grounds", "grounding", "—", "pointing game above the fixed point")] == "holds"
    assert claims[("SISTA grounds", "grounding", "—", "pointing game at least 80% of the oracle")] == "not shown"
    assert claims[("SISTA grounds", "grounding", "—", "pointing game above the text prior")] == "holds"
    # the control of seed 2 (0.30) is more than half of its own-image score (0.5)
    assert claims[("SISTA grounds", "grounding", "—",
                   "pointing game shuffled-image control at most half of it, every seed")] == "not shown"


def test_grounding_headline_carries_the_controls_and_the_small_findings():
    results = {"overall": {"accuracy": 0.3, "random_baseline": 0.02, "fixed_point_baseline": 0.4, "oracle": 0.6,
                           "num_findings": 10, "text_prior_baseline": 0.45, "shuffled_image_accuracy": 0.1,
                           "cnr": 0.8, "shuffled_image_cnr": 0.2, "text_prior_cnr": 1.5},
               "per_group": {"small_or_ambiguous": {"accuracy": 0.1, "text_prior_baseline": 0.2, "oracle": 0.5}}}
    headline = reproduce.headline_from_results("grounding", results)
    assert headline == {
        "pointing_accuracy": 0.3, "pointing_random_baseline": 0.02, "pointing_fixed_point_baseline": 0.4,
        "pointing_oracle": 0.6, "pointing_num_findings": 10, "pointing_text_prior": 0.45,
        "pointing_shuffled_image": 0.1, "pointing_cnr": 0.8, "pointing_shuffled_cnr": 0.2,
        "pointing_text_prior_cnr": 1.5, "pointing_small_accuracy": 0.1, "pointing_small_text_prior": 0.2,
        "pointing_small_oracle": 0.5,
    }
    # a run without a text prior (no training split) stores no key for it, rather than None
    del results["overall"]["text_prior_baseline"]
    assert "pointing_text_prior" not in reproduce.headline_from_results("grounding", results)
    records = [{"objective": objective, "seed": 0, "task": "grounding", "label_fraction": None,
                "metrics": reproduce.headline_from_results("grounding", results)} for objective in ("clip", "sista")]
    lines = reproduce.markdown_table(reproduce.summarize(records), ["clip", "sista"]).splitlines()
    control_row = ("| grounding | pointing game, another study's image | — | 0.100 (n=1) | 0.100 (n=1) | "
                   "random 0.020 |")
    assert control_row in lines
    assert "| grounding | pointing CNR | — | 0.800 (n=1) | 0.800 (n=1) | text prior cnr 1.500 |" in lines
    assert ("| grounding | pointing game, small/ambiguous findings | — | 0.100 (n=1) | 0.100 (n=1) | "
            "small text prior 0.200; small oracle 0.500 |") in lines


def test_a_head_row_picked_at_its_first_evaluation_is_not_tested():
    records = []
    for seed, (clip, sista, best) in enumerate([(0.01, 0.05, 50), (0.02, 0.06, 50), (0.01, 0.04, 150)]):
        for objective, value in (("clip", clip), ("sista", sista)):
            records.append({"objective": objective, "seed": seed, "task": "detection", "label_fraction": 0.01,
                            "metrics": {"map_40_75": value},
                            "step_selection": {"best_step": best, "max_steps": 200}})
    first = reproduce.stopped_at_first_evaluation(records)
    assert first == {("detection", "0.01"): (4, 6)}
    summary = reproduce.summarize(records)
    verdicts = {c["comparison"]: c["verdict"] for c in reproduce.claim_verdicts(summary, first)}
    assert verdicts["sista − clip"] == "not tested (first evaluation picked in 4 of 6 runs)"
    # without the step record the same numbers hold (+0.04 in every seed)
    assert {c["verdict"] for c in reproduce.claim_verdicts(summary)} == {"holds"}


def test_step_selection_counts_the_last_quarter_of_each_budget():
    """Evaluations every budget // 4 steps and at the end: steps 148, 150 of 150 and 60 of 60 are late; 111 of 150 and
    45 of 60 are not."""
    def record(task, fraction, best_step, max_steps):
        return {"task": task, "label_fraction": fraction,
                "step_selection": {"best_step": best_step, "max_steps": max_steps}}

    records = [record("segmentation", 1.0, 148, 150), record("segmentation", 1.0, 150, 150),
               record("segmentation", 1.0, 111, 150), record("detection", 0.01, 45, 60),
               record("detection", 0.01, 60, 60), {"task": "retrieval", "label_fraction": None}]
    assert reproduce.step_selection_text(records) == (
        "The validation split picked a step in the last quarter of the budget in 3 of 5 head runs "
        "(detection 1%: 1 of 2, segmentation 100%: 2 of 3)."
    )
    assert reproduce.step_selection_text(records[-1:]) == ""


def test_single_seed_has_no_std():
    assert reproduce.mean_std([0.5]) == (0.5, None)
    assert reproduce.format_mean_std({"mean": 0.5, "std": None}) == "0.500 (n=1)"


def test_plots_write_png(tmp_path):
    records, _ = fake_records()
    summary = reproduce.summarize(records)
    curves = reproduce.plot_label_fraction_curves(summary, ["clip", "sista"], tmp_path / "curves.png")
    bars = reproduce.plot_no_label_tasks(summary, ["clip", "sista"], tmp_path / "bars.png")
    for path in (curves, bars):
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_aggregate_reads_records_and_writes_outputs(tmp_path):
    records, _ = fake_records()
    for index, record in enumerate(records):
        path = tmp_path / "work" / "runs" / f"{record['objective']}-seed{record['seed']}" / "records" / f"{index}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    failed = {"objective": "sista", "seed": 0, "task": "retrieval", "label_fraction": None, "error": "ValueError: x"}
    (tmp_path / "work" / "runs" / "sista-seed0" / "records" / "retrieval.error.json").write_text(json.dumps(failed))
    # --allow_dirty: the test runs in any checkout (the refusal itself is tested below)
    args = reproduce.parse_arguments(
        ["--work_dir", str(tmp_path / "work"), "--output_dir", str(tmp_path / "out"), "--allow_dirty"]
    )
    payload = reproduce.aggregate(args, "python research/reproduce.py")
    assert payload["num_records"] == len(records)  # the failed run is an error, not a record
    assert [error["error"] for error in payload["errors"]] == ["ValueError: x"]
    assert (tmp_path / "out" / "reproduce_table.md").is_file()
    assert (tmp_path / "out" / "reproduce_label_fractions.png").is_file()
    saved = json.loads((tmp_path / "out" / "reproduce_results.json").read_text())
    assert saved["summary"]["classification"]["auroc"]["0.01"]["clip"]["mean"] == pytest.approx(0.62)


def test_a_seed_not_every_objective_finished_is_left_out(tmp_path):
    """A study stopped mid-seed: seed 3 has CLIP's 1% probe only, seed 4 every run but SISTA's 100% probe. Both are
    left out with their reasons; a failed run (SISTA's retrieval at seed 0) finishes its seed and is reported."""
    records, _ = fake_records()
    records += [{"objective": "clip", "seed": 3, "task": "classification", "label_fraction": 0.01,
                 "metrics": {"auroc": 0.99}},
                {"objective": "clip", "seed": 3, "task": "pretrain", "label_fraction": None, "wall_time_s": 1.0}]
    records += [{"objective": objective, "seed": 4, "task": "classification", "label_fraction": fraction,
                 "metrics": {"auroc": 0.99}} for objective in ("clip", "sista") for fraction in (0.01, 1.0)][:-1]
    errors = [{"objective": "sista", "seed": 0, "task": "retrieval", "label_fraction": None, "error": "ValueError: x"}]
    assert reproduce.unfinished_seeds(records, errors) == {3: "unfinished: sista lacks 1 of 1 runs",
                                                           4: "unfinished: sista lacks 1 of 2 runs"}
    records.append({"objective": "clip", "seed": 0, "task": "retrieval", "label_fraction": None,
                    "metrics": {"recall_at_1": 0.1}})  # SISTA's error at seed 0 stands for its retrieval
    assert set(reproduce.unfinished_seeds(records, errors)) == {3, 4}
    for index, record in enumerate(records + errors):
        name = f"{index}.error.json" if "error" in record else f"{index}.json"
        path = tmp_path / "work" / "runs" / f"{record['objective']}-seed{record['seed']}" / "records" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    args = reproduce.parse_arguments(
        ["--work_dir", str(tmp_path / "work"), "--output_dir", str(tmp_path / "out"), "--allow_dirty"]
    )
    payload = reproduce.aggregate(args, "python research/reproduce.py")
    assert payload["seeds_left_out"] == {"3": "unfinished: sista lacks 1 of 1 runs",
                                         "4": "unfinished: sista lacks 1 of 2 runs"}
    assert payload["num_records"] == len(records) - 5 and len(payload["errors"]) == 1
    clip = payload["summary"]["classification"]["auroc"]["0.01"]["clip"]
    assert clip["seeds"] == [0, 1, 2] and clip["mean"] == pytest.approx(0.62)  # not 0.99's seeds
    table = (tmp_path / "out" / "reproduce_table.md").read_text()
    assert "over seeds [0, 1, 2]" in table and "Seed 3 left out (unfinished: sista lacks 1 of 1 runs)." in table


def test_quick_argument_parsing():
    quick = reproduce.parse_arguments(["--quick"])
    assert quick.quick and quick.seed_list == [0]
    assert quick.fraction_list == [0.1, 1.0]
    assert len(quick.task_list) == 6  # every task, on tiny budgets
    assert quick.num_pretrain < 1000 and max(quick.step_budgets["segmentation"].values()) <= 20
    full = reproduce.parse_arguments([])
    assert full.seed_list == [0, 1, 2, 3, 4] and full.objective_list == ["clip", "sia", "sta", "sista"]
    assert full.fraction_list == [0.01, 0.1, 1.0] and len(full.task_list) == 6
    assert full.num_train * 0.01 >= 100  # 1% of the labelled pool is at least 100 studies
    assert full.step_budgets == {task: reproduce.parse_budgets(text, task, full.fraction_list) for task, text in
                                 (("segmentation", reproduce.FULL_SEGMENTATION_STEPS),
                                  ("detection", reproduce.FULL_DETECTION_STEPS))}
    assert full.segmentation_decoder == "auto"
    custom = reproduce.parse_arguments(["--quick", "--seeds", "3,4", "--objectives", "clip,sista", "--output_dir", "x"])
    assert custom.seed_list == [3, 4] and custom.objective_list == ["clip", "sista"] and custom.output_dir == "x"


@pytest.mark.parametrize("argv", [["--objectives", "clip,simclr"], ["--tasks", "vqa"], ["--label_fractions", "0,1"],
                                  ["--seeds", "a"], ["--segmentation_steps", "0.5:10"],
                                  ["--detection_steps", "0.01:0"], ["--detection_steps", "1=20"]])
def test_bad_arguments_are_refused(argv):
    with pytest.raises(ValueError):
        reproduce.parse_arguments(argv)


def test_in_batch_false_negative_flags_against_hand_count():
    fn_analysis = load_script("research/fn_analysis.py")
    # 4 studies: 0 and 1 identical reports with the same labels, 2 similar to 0 but other labels, 3 orthogonal
    embeddings = np.array([[1, 0, 0], [1, 0, 0], [0.8, 0.6, 0], [0, 0, 1]], dtype=np.float32)
    label_ids = np.array([0, 0, 1, 2])
    stats = fn_analysis.in_batch_flags(embeddings, label_ids, threshold=0.7, batch_size=4, num_batches=3)
    # flagged ordered pairs: (0,1),(1,0),(0,2),(2,0),(1,2),(2,1) = 6 of 12; same-label: (0,1),(1,0)
    assert stats["fraction_of_pairs_flagged_mean"] == pytest.approx(0.5)
    assert stats["precision"] == pytest.approx(2 / 6) and stats["recall"] == pytest.approx(1.0)
    assert stats["fraction_of_rows_with_a_flag"] == pytest.approx(0.75)


def test_run_all_parsers():
    run_all = load_script("benchmarks/run_all.py")
    core = run_all.parse_core(
        "batch 64, demo encoders: CLIP 1.237 s/step, SISTA 1.254 s/step, ratio 1.014 (target <= 1.05)\n"
        "| 256 | 128 | 196 | 128 | 429 | 0.51 |\n| 64 | 128 | 196 | 128 | 122 | 0.10 |\n"
    )
    assert core["sista_clip_ratio"] == 1.014 and [row["B"] for row in core["sta_memory"]] == [256, 64]
    pretrain = run_all.parse_pretrain(
        "demo model (small preset, 128 px, batch 32, 60 tokens): 0.360 s/step, 88.9 samples/s\n"
        "data pipeline, one process (decode + augment + processor + collate): 600.0 images/s = 6.7x the model's"
    )
    assert pretrain["demo_samples_per_s"] == 88.9 and pretrain["pipeline_over_model"] == 6.7
    table = run_all.readme_table({"core": {"returncode": 0, "parsed": core},
                                  "pretrain": {"returncode": 0, "parsed": pretrain}})
    assert "1.254 / 1.237 s = 1.014" in table and "88.9 samples/s" in table


def test_run_all_parses_the_transformers_clip_ratio_and_the_mimic_scale_steps():
    run_all = load_script("benchmarks/run_all.py")
    core = run_all.parse_core(
        "against transformers' VisionTextDualEncoderModel (ViT 192x4 at 128 px, BERT 192x4, batch 64, 96 tokens, 15 "
        "interleaved step pairs): CLIP 2.000 s/step, SISTA 2.050 s/step, ratio 1.025 (median of pair ratios 1.024; "
        "target <= 1.03)\n"
    )
    assert core["transformers_clip"] == {
        "transformers_clip_step_s": 2.0, "sista_step_s": 2.05, "ratio": 1.025, "median_pair_ratio": 1.024
    }  # fmt: skip
    mimic = run_all.parse_mimic_scale(
        "| step | items | seconds | s per 1,000 | projected to MIMIC-CXR (min) |\n|---|---:|---:|---:|---:|\n"
        "| preparation, --num_proc 2 | 400 images | 8.00 | 20.00 | 125.7 |\n"
        "| pretrain.py start: count the truncated reports | 360 training rows | 0.36 | 1.00 | 6.3 |\n"
    )
    assert [(row["step"], row["items"], row["unit"], row["seconds_per_1000"]) for row in mimic["steps"]] == [
        ("preparation, --num_proc 2", 400, "images", 20.0),
        ("pretrain.py start: count the truncated reports", 360, "training rows", 1.0),
    ]
    table = run_all.readme_table({"core": {"returncode": 0, "parsed": core},
                                  "mimic_scale": {"returncode": 0, "parsed": mimic}})
    assert "2.050 / 2.000 s = 1.025" in table and "20.00 s per 1,000, 125.7 min projected" in table


def test_run_all_report_similarity_parser_and_skip(tmp_path):
    """The parsed default-threshold rows of the curated Markdown equal the JSON written beside it."""
    run_all = load_script("benchmarks/run_all.py")
    results_dir = Path(__file__).resolve().parents[1] / "docs" / "results"
    parsed = run_all.parse_report_similarity((results_dir / "report_similarity_real.md").read_text())
    written = json.loads((results_dir / "report_similarity_real.json").read_text())["encoders"]
    assert [row["encoder"] for row in parsed["encoders"]] == list(written)
    for row in parsed["encoders"]:
        default = written[row["encoder"]]["default"]
        assert row["threshold"] == pytest.approx(default["threshold"], abs=5e-3)
        assert row["precision"] == pytest.approx(default["precision"], abs=5e-4)
        assert row["normal_normal_recall"] == pytest.approx(default["normal_normal_recall"], abs=5e-4)
        assert row["percent_flagged"] == pytest.approx(100 * default["fraction_flagged"], abs=5e-3)
    # without the reports, the benchmark is skipped with a message in the table, not failed
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(run_all.REQUIRED_INPUTS, "report_similarity", tmp_path / "absent.tgz")
        payload = run_all.main(
            ["--quick", "--only", "report_similarity", "--output_dir", str(tmp_path / "out"), "--allow_dirty"]
        )
    assert "skipped: needs" in payload["table_markdown"] and "absent.tgz" in payload["table_markdown"]


def test_pretrain_extra_args_are_appended_last(tmp_path):
    args = reproduce.parse_arguments(["--work_dir", str(tmp_path), "--pretrain_extra_args",
                                      "--no_augment --warmup_steps 50 --text_model_name_or_path 'a dir'"])
    cli = reproduce.pretrain_arguments(args, "clip", 0, tmp_path / "run")
    assert cli[-5:] == ["--no_augment", "--warmup_steps", "50", "--text_model_name_or_path", "a dir"]
    assert cli.count("--warmup_steps") == 2  # the study's 20, then the override (argparse keeps the last)
    default = reproduce.pretrain_arguments(reproduce.parse_arguments(["--work_dir", str(tmp_path)]), "clip", 0, tmp_path / "run")
    assert cli[: len(default)] == default
    from transformers import HfArgumentParser

    from sista_examples.training.pretraining import PretrainingDataArguments, PretrainingModelArguments
    from sista_examples.training.trainer import SistaTrainingArguments

    parser = HfArgumentParser((PretrainingModelArguments, PretrainingDataArguments, SistaTrainingArguments))
    parsed = parser.parse_args_into_dataclasses(args=cli)
    assert parsed[2].warmup_steps == 50 and parsed[1].augment is False and parsed[0].text_model_name_or_path == "a dir"


def test_recipe_table_applies_the_learning_check(tmp_path):
    recipe_table = load_script("research/recipe_table.py")
    records = [
        {"objective": "clip", "seed": 0, "task": "retrieval",
         "metrics": {"i2r_R@10": 0.12, "chance_R@10": 0.02, "image_mean_cosine": 0.5}},  # 6x chance, spread
        {"objective": "clip", "seed": 1, "task": "retrieval",
         "metrics": {"i2r_R@10": 0.20, "chance_R@10": 0.02, "image_mean_cosine": 0.95}},  # collapsed images
        {"objective": "sista", "seed": 0, "task": "retrieval",
         "metrics": {"i2r_R@10": 0.08, "chance_R@10": 0.02, "image_mean_cosine": 0.3}},  # 4x chance
    ]
    study = tmp_path / "study.json"
    study.write_text(json.dumps({"protocol": {"image_size": 128}, "records": records, "command": "c"}))
    text = recipe_table.main(["--study", f"resnet={study}", "--output", str(tmp_path / "table.md")])
    rows = [line for line in text.splitlines() if line.startswith("| resnet")]
    assert [row.split("|")[-2].strip() for row in rows] == ["yes", "no", "no"]
    assert rows[0] == "| resnet (8 × 8) | clip | 0 | 0.120 | 6.0 × | 0.500 | — | yes |"


def test_records_refuse_a_dirty_checkout_unless_told(tmp_path):
    """The study's and the benchmarks' records name the commit that made them, so a dirty tree is refused."""
    import subprocess

    from sista_examples.evaluation.results import source_provenance

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "code")
    clean = source_provenance(tmp_path)
    assert clean == {"git_commit": git("rev-parse", "HEAD").strip(), "git_dirty_files": []}
    (tmp_path / "code.py").write_text("x = 2\n")
    with pytest.raises(RuntimeError, match=r"1 uncommitted change\(s\) \(M code.py\).*--allow_dirty"):
        source_provenance(tmp_path)
    assert source_provenance(tmp_path, allow_dirty=True)["git_dirty_files"] == [" M code.py"]
    # both writers stop before running anything on a dirty checkout
    run_all = load_script("benchmarks/run_all.py")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_all, "ROOT", tmp_path)
        with pytest.raises(RuntimeError, match="--allow_dirty"):
            run_all.main(["--quick", "--only", "report_similarity", "--output_dir", str(tmp_path / "out")])
        patch.setattr(reproduce, "ROOT", tmp_path)
        with pytest.raises(RuntimeError, match="--allow_dirty"):
            reproduce.main(["--aggregate_only", "--work_dir", str(tmp_path / "w"), "--output_dir", str(tmp_path / "o")])
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_aggregate_into_the_clean_checkout_it_reads(tmp_path):
    """`--aggregate_only` with records and outputs inside a clean checkout (the default docs/results) names its commit;
    its own outputs, written before the JSON, do not make it refuse the checkout as dirty."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    records, _ = fake_records()
    for index, record in enumerate(records):
        path = tmp_path / "docs" / "runs" / f"{record['objective']}-seed{record['seed']}" / "records" / f"{index}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    git("init", "-q")
    git("add", "docs")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "records")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reproduce, "ROOT", tmp_path)
        payload = reproduce.main(["--aggregate_only", "--work_dir", str(tmp_path / "docs"),
                                  "--output_dir", str(tmp_path / "docs")])
    assert payload["versions"]["git_commit"] == git("rev-parse", "HEAD").strip()
    assert payload["versions"]["git_dirty_files"] == []
    assert json.loads((tmp_path / "docs" / "reproduce_results.json").read_text())["num_records"] == len(records)
    # committed, then aggregated again over the seeds every objective finished
    git("add", "docs")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "outputs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reproduce, "ROOT", tmp_path)
        payload = reproduce.main(["--aggregate_only", "--seeds", "0,1", "--work_dir", str(tmp_path / "docs"),
                                  "--output_dir", str(tmp_path / "docs")])
    assert payload["num_records"] == sum(record["seed"] in (0, 1) for record in records) < len(records)
    assert payload["summary"]["classification"]["auroc"]["0.01"]["clip"]["seeds"] == [0, 1]


def test_a_run_whose_records_all_exist_runs_nothing(tmp_path, monkeypatch):
    """Records copied from another machine (no checkpoint beside them) complete an (objective, seed); one missing
    record runs again, after the pre-training its checkpoint needs."""
    args = reproduce.parse_arguments(["--work_dir", str(tmp_path), "--seeds", "3"])
    called = []
    monkeypatch.setattr(reproduce, "example_script", lambda name: called.append(name) or 1 / 0)
    names = ["pretrain", *(f"classification-{fraction:g}" for fraction in args.fraction_list),
             *(f"{task}-{fraction:g}" for task in ("segmentation", "detection") for fraction in args.step_budgets[task]),
             *reproduce.EVAL_TASKS]
    for name in names:
        path = tmp_path / "runs" / "sta-seed3" / "records" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    reproduce.run_one(args, "sta", 3)
    assert called == []
    (tmp_path / "runs" / "sta-seed3" / "records" / "grounding.json").unlink()
    with pytest.raises(ZeroDivisionError):
        reproduce.run_one(args, "sta", 3)
    assert called == ["pretrain"]


def test_records_name_the_commit_that_made_them(tmp_path):
    import subprocess

    reproduce.write_record(tmp_path / "records" / "grounding.json", {"objective": "sta", "seed": 3})
    saved = json.loads((tmp_path / "records" / "grounding.json").read_text())
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=reproduce.ROOT, capture_output=True, text=True)
    head = git.stdout.strip()
    assert saved["objective"] == "sta" and saved["source"]["git_commit"] == (head or None)
    assert not list((tmp_path / "records").glob("*.tmp"))
