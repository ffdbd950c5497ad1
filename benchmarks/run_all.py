#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""One entry point for the performance benchmarks: runs the benchmark scripts, collects one README-ready table.

Runs, each in its own process, one after the other so they do not compete for cores:

* `benchmarks/bench_core.py`      SISTA / CLIP train-step time ratio (interleaved rounds), STA memory over B, L, P;
* `benchmarks/bench_pretrain.py`  pre-training samples/s of the demo model, data-pipeline images/s (and ViT-B/16);
* `benchmarks/bench_synthcxr.py`  SynthCXR generation images/s;
* `benchmarks/bench_prepare.py`   real-dataset preparation throughput (fixture JPEGs);
* `benchmarks/bench_mimic_scale.py`  every one-time step before MIMIC-CXR pre-training (preparation, the labeler's
  report embeddings, the tokenizer and truncation count), per 1,000 items and projected to the full dataset;
* `benchmarks/bench_report_similarity.py`  SIA's false-negative detector per report encoder on the IU X-ray
  development reports (`../shared/data/iu_xray_reports_dev.tgz`; skipped with a message when absent).

Every ratio in the table comes from numbers measured in the same run. The raw output of each script is kept.

    python benchmarks/run_all.py                      # full settings (tens of minutes on 2 cores)
    python benchmarks/run_all.py --quick              # small settings, to check the pipeline (a few minutes)
    python benchmarks/run_all.py --only core,pretrain --output_dir docs/results/benchmarks

Writes `<output_dir>/benchmarks_results.json`, `<output_dir>/benchmarks_table.md` and `<output_dir>/raw/*.txt`.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from sista_examples.evaluation.results import source_provenance


ROOT = Path(__file__).resolve().parents[1]
IU_XRAY_REPORTS = ROOT.parent / "shared" / "data" / "iu_xray_reports_dev.tgz"

# name -> (script, full arguments, --quick arguments)
BENCHMARKS = {
    "core": ("benchmarks/bench_core.py", [], ["--steps", "1", "--clip_steps", "2"]),
    "pretrain": ("benchmarks/bench_pretrain.py", [], ["--steps", "2", "--skip_base"]),
    "synthcxr": (
        "benchmarks/bench_synthcxr.py",
        ["--num_images", "2000", "--image_size", "224", "--num_proc", "2"],
        ["--num_images", "200", "--image_size", "64", "--num_proc", "2"],
    ),
    "prepare": (
        "benchmarks/bench_prepare.py",
        [],
        ["--sizes", "20", "--throughput_size", "20", "--source_size", "512", "--image_size", "256"],
    ),
    "mimic_scale": ("benchmarks/bench_mimic_scale.py", [], ["--num_images", "40"]),
    # writes its tables under the output folder; the curated copy is docs/results/report_similarity_real.md
    "report_similarity": (
        "benchmarks/bench_report_similarity.py",
        [str(IU_XRAY_REPORTS), "--output", "{output_dir}/report_similarity_real"],
        [str(IU_XRAY_REPORTS), "--encoders", "labeler", "tfidf", "--output", "{output_dir}/report_similarity_real"],
    ),
}
# Inputs a benchmark needs that are not in the repository: without them it is skipped, with a message.
REQUIRED_INPUTS = {"report_similarity": IU_XRAY_REPORTS}

_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def parse_core(text: str) -> dict:
    parsed = {}
    match = re.search(rf"CLIP {_NUMBER} s/step, SISTA {_NUMBER} s/step, ratio {_NUMBER}", text)
    if match:
        parsed["clip_step_s"], parsed["sista_step_s"], parsed["sista_clip_ratio"] = map(float, match.groups())
    rows = re.findall(rf"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*{_NUMBER}\s*\|\s*{_NUMBER}\s*\|",
                      text, flags=re.MULTILINE)
    if rows:
        parsed["sta_memory"] = [
            {"B": int(b), "L": int(l), "P": int(p), "D": int(d), "peak_mb": float(mb), "seconds": float(s)}
            for b, l, p, d, mb, s in rows
        ]
    parsed.update(parse_core_transformers_clip(text))
    return parsed


def parse_pretrain(text: str) -> dict:
    parsed = {}
    match = re.search(rf"demo model .*?: {_NUMBER} s/step, {_NUMBER} samples/s", text)
    if match:
        parsed["demo_step_s"], parsed["demo_samples_per_s"] = map(float, match.groups())
    match = re.search(rf"data pipeline.*?: {_NUMBER} images/s = {_NUMBER}x", text)
    if match:
        parsed["pipeline_images_per_s"], parsed["pipeline_over_model"] = map(float, match.groups())
    match = re.search(rf"ViT-B/16 \+ BERT-base.*?: {_NUMBER} s/step \({_NUMBER} samples/s\)", text)
    if match:
        parsed["base_step_s"], parsed["base_samples_per_s"] = map(float, match.groups())
    return parsed


def parse_synthcxr(text: str) -> dict:
    parsed = {}
    match = re.search(rf"generate: (\d+) images at (\d+)x\d+ px.*?: {_NUMBER} s total, {_NUMBER} images/s", text)
    if match:
        parsed["num_images"], parsed["image_size"] = int(match.group(1)), int(match.group(2))
        parsed["wall_s"], parsed["images_per_s"] = float(match.group(3)), float(match.group(4))
    match = re.search(rf"\({_NUMBER} ms/image\); on (\d+) idle cores ~{_NUMBER} s, {_NUMBER} images/s", text)
    if match:
        parsed["cpu_ms_per_image"] = float(match.group(1))
        parsed["idle_cores_images_per_s"] = float(match.group(4))
    return parsed


def parse_prepare(text: str) -> dict:
    rows = re.findall(rf"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\w+)\s*\|\s*{_NUMBER}\s*\|", text, flags=re.MULTILINE)
    return {"runs": [{"images": int(n), "num_proc": int(p), "format": f, "images_per_s": float(r)}
                     for n, p, f, r in rows]} if rows else {}


def parse_core_transformers_clip(text: str) -> dict:
    match = re.search(rf"VisionTextDualEncoderModel .*?: CLIP {_NUMBER} s/step, SISTA {_NUMBER} s/step, ratio "
                      rf"{_NUMBER} \(median of pair ratios {_NUMBER}", text)
    if not match:
        return {}
    keys = ("transformers_clip_step_s", "sista_step_s", "ratio", "median_pair_ratio")
    return {"transformers_clip": dict(zip(keys, map(float, match.groups())))}


def parse_mimic_scale(text: str) -> dict:
    cell = r"\s*\|\s*"
    rows = re.findall(rf"^\|\s*([^|]+?){cell}(\d+) ([a-z ]+?){cell}{_NUMBER}{cell}{_NUMBER}{cell}{_NUMBER}\s*\|", text,
                      flags=re.MULTILINE)
    return {"steps": [{"step": step, "items": int(items), "unit": unit, "seconds": float(seconds),
                       "seconds_per_1000": float(per_thousand), "projected_minutes": float(minutes)}
                      for step, items, unit, seconds, per_thousand, minutes in rows]} if rows else {}


def parse_report_similarity(text: str) -> dict:
    defaults = text.split("## At each encoder's default threshold")[-1].split("## Threshold sweep")[0]
    rows = re.findall(rf"^\|\s*(\w+)\s*\|\s*{_NUMBER}\s*\|\s*{_NUMBER}%\s*\|\s*{_NUMBER}\s*\|\s*{_NUMBER}\s*\|"
                      rf"\s*{_NUMBER}\s*\|", defaults, flags=re.MULTILINE)
    return {"encoders": [{"encoder": name, "threshold": float(t), "percent_flagged": float(f), "precision": float(p),
                          "recall": float(r), "normal_normal_recall": float(n)} for name, t, f, p, r, n in rows]
            } if rows else {}


PARSERS = {"core": parse_core, "pretrain": parse_pretrain, "synthcxr": parse_synthcxr, "prepare": parse_prepare,
           "mimic_scale": parse_mimic_scale, "report_similarity": parse_report_similarity}


def run_benchmark(name: str, quick: bool, raw_dir: Path, timeout: int) -> dict:
    script, full_args, quick_args = BENCHMARKS[name]
    arguments = [argument.format(output_dir=raw_dir.parent) for argument in (quick_args if quick else full_args)]
    command = [sys.executable, script, *arguments]
    start = time.time()
    load_before = os.getloadavg()
    try:
        completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        output, returncode = completed.stdout + completed.stderr, completed.returncode
    except subprocess.TimeoutExpired as error:
        output = (error.stdout or b"").decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
        output, returncode = output + f"\nTIMEOUT after {timeout} s", None
    raw_dir.mkdir(parents=True, exist_ok=True)
    (raw_dir / f"bench_{name}.txt").write_text(output)
    return {
        "command": " ".join(["python", *command[1:]]),
        "returncode": returncode,
        "wall_s": time.time() - start,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "parsed": PARSERS[name](output),
        "error_tail": None if returncode == 0 else output[-2000:],
    }


def readme_table(results: dict) -> str:
    """The README-ready summary: one row per quantity, each measured in this run."""
    rows = []
    core = results.get("core", {}).get("parsed", {})
    pretrain = results.get("pretrain", {}).get("parsed", {})
    synth = results.get("synthcxr", {}).get("parsed", {})
    prepare = results.get("prepare", {}).get("parsed", {})
    if "sista_clip_ratio" in core:
        rows.append(("SISTA / CLIP train-step time (batch 64, demo encoders)",
                     f"{core['sista_step_s']:.3f} / {core['clip_step_s']:.3f} s = {core['sista_clip_ratio']:.3f}"))
    if "transformers_clip" in core:
        entry = core["transformers_clip"]
        rows.append(("SISTA / transformers CLIP train-step time (ViT 192x4 128 px, BERT 192x4, batch 64, interleaved)",
                     f"{entry['sista_step_s']:.3f} / {entry['transformers_clip_step_s']:.3f} s = {entry['ratio']:.3f} "
                     f"(median pair ratio {entry['median_pair_ratio']:.3f})"))
    for entry in core.get("sta_memory", []):
        rows.append((f"STA fwd+bwd peak tensor memory, B={entry['B']} L={entry['L']} P={entry['P']} D={entry['D']}",
                     f"{entry['peak_mb']:.0f} MB ({entry['seconds']:.2f} s)"))
    if "demo_samples_per_s" in pretrain:
        rows.append(("pre-training, demo model (small, 128 px, batch 32)",
                     f"{pretrain['demo_step_s']:.3f} s/step = {pretrain['demo_samples_per_s']:.1f} samples/s"))
    if "pipeline_images_per_s" in pretrain:
        rows.append(("data pipeline, one process (decode + augment + processor + collate)",
                     f"{pretrain['pipeline_images_per_s']:.1f} images/s = {pretrain['pipeline_over_model']:.1f}x "
                     "the model's rate"))
    if "base_samples_per_s" in pretrain:
        rows.append(("pre-training, ViT-B/16 + BERT-base (224 px, batch 8)",
                     f"{pretrain['base_step_s']:.2f} s/step = {pretrain['base_samples_per_s']:.2f} samples/s"))
    if "images_per_s" in synth:
        rows.append((f"SynthCXR generation, {synth['num_images']} images at {synth['image_size']} px",
                     f"{synth['images_per_s']:.1f} images/s wall ({synth.get('cpu_ms_per_image', 0):.1f} CPU-ms/image)"))
    for entry in results.get("report_similarity", {}).get("parsed", {}).get("encoders", []):
        rows.append((f"SIA false negatives on IU X-ray reports, {entry['encoder']} @ {entry['threshold']:.2f}",
                     f"precision {entry['precision']:.3f}, normal-normal recall {entry['normal_normal_recall']:.3f}, "
                     f"{entry['percent_flagged']:.2f}% of pairs flagged"))
    for entry in prepare.get("runs", []):
        rows.append((f"dataset preparation, {entry['images']} images, num_proc {entry['num_proc']}, {entry['format']}",
                     f"{entry['images_per_s']:.1f} images/s"))
    for entry in results.get("mimic_scale", {}).get("parsed", {}).get("steps", []):
        rows.append((f"MIMIC-CXR one-time step: {entry['step']} ({entry['items']} {entry['unit']})",
                     f"{entry['seconds_per_1000']:.2f} s per 1,000, {entry['projected_minutes']:.1f} min projected"))
    for name, result in results.items():
        if result.get("skipped"):
            rows.append((f"bench_{name}.py", f"skipped: {result['skipped']}"))
        elif result.get("returncode") != 0:
            rows.append((f"bench_{name}.py", f"FAILED (rc {result.get('returncode')}), see raw/bench_{name}.txt"))
    lines = ["| what | result |", "|---|---|", *[f"| {what} | {value} |" for what, value in rows]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Small settings, to check the pipeline.")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"Comma-separated subset of {list(BENCHMARKS)}.")
    parser.add_argument("--output_dir", default="docs/results/benchmarks", help="Where JSON, table and raw go.")
    parser.add_argument("--timeout", type=int, default=3600, help="Seconds per benchmark script.")
    parser.add_argument("--allow_dirty", action="store_true",
                        help="Record from a checkout with uncommitted changes (listed in the record); refused otherwise.")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"--only must name benchmarks among {list(BENCHMARKS)}, got {unknown}")

    # a dirty checkout stops here, before any benchmark runs: the record would name a commit without this code
    provenance = source_provenance(ROOT, args.allow_dirty)
    output_dir = Path(args.output_dir)
    if not output_dir.is_absolute():
        output_dir = ROOT / output_dir
    results = {}
    for name in names:
        missing = REQUIRED_INPUTS.get(name)
        if missing is not None and not missing.is_file():
            results[name] = {"skipped": f"needs {missing}, which does not exist"}
            print(f"skipping bench_{name}.py: it needs {missing}, which does not exist.", flush=True)
            continue
        print(f"running bench_{name}.py ...", flush=True)
        results[name] = run_benchmark(name, args.quick, output_dir / "raw", args.timeout)
        print(f"  rc {results[name]['returncode']} in {results[name]['wall_s']:.0f} s: {results[name]['parsed']}",
              flush=True)
    table = readme_table(results)
    import torch

    payload = {
        "quick": args.quick,
        "command": " ".join(["python", "benchmarks/run_all.py", *(argv if argv is not None else sys.argv[1:])]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
                     **provenance},
        "results": results,
        "table_markdown": table,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (output_dir / f"benchmarks_results{suffix}.json").write_text(json.dumps(payload, indent=2) + "\n")
    commit = (provenance["git_commit"] or "unknown")[:12] + (" with uncommitted changes" if provenance["git_dirty_files"]
                                                              else "")
    header = (f"Measured with `{payload['command']}` at commit {commit} (torch {torch.__version__}, "
              f"{os.cpu_count()} CPUs).\n\n")
    (output_dir / f"benchmarks_table{suffix}.md").write_text(header + table)
    print(table)
    return payload


if __name__ == "__main__":
    main()
