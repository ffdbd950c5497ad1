#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""The one-time steps before pre-training on MIMIC-CXR, timed on a simulated fraction of it (numbers to report).

Writes `--num_images` small JPEGs in MIMIC-CXR-JPG's layout with their metadata, split and chexpert csv files
(`bench_prepare.write_fixture`: two frontal images per study) and one MIMIC-style report per study
(`files/pXX/pXXXXXXXX/sXXXXXXXX.txt`: the usual header, then FINDINGS and IMPRESSION written by SynthCXR's report
generator, so that reports differ in findings, negations and length), then times each one-time step:

1. preparation, `prepare_mimic_cxr` at each `--num_proc` (each in a fresh process, imports excluded);
2. the labeler's report embeddings (`embed_dataset(encoder="labeler")`, what `examples/report_embeddings.py
   --encoder labeler` computes) on every prepared row, at each `--num_proc`, checked identical across them;
3. the start of `examples/pretrain.py`: reading the training split's report column, building the WordPiece tokenizer
   (`train_report_tokenizer`) and counting the reports longer than `--max_length` (`count_truncated_reports`).

Each is printed as seconds per 1,000 items and projected linearly to MIMIC-CXR's size (`--full_reports` reports,
`--full_images` images; the prepared dataset has one row per frontal image, so the labeler and the tokenizer read
one report per row). The machine's load average is printed with the numbers.

    python benchmarks/bench_mimic_scale.py                         # 400 images, num_proc 1 and 2
    python benchmarks/bench_mimic_scale.py --num_images 4000 --num_proc 1 2 --work_dir /tmp
"""

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


MIMIC_CXR_REPORTS = 227_835  # studies (reports) of MIMIC-CXR 2.0
MIMIC_CXR_IMAGES = 377_110  # images of MIMIC-CXR-JPG 2.0
REPORT_HEADER = (
    "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n"
    " INDICATION:  ___ year old with {indication}.\n \n TECHNIQUE:  Chest PA and lateral\n \n"
    " COMPARISON:  {comparison}\n \n"
)
INDICATIONS = ("cough", "shortness of breath", "fever", "chest pain", "evaluate for pneumonia", "line placement")
COMPARISONS = ("None.", "___.", "Chest radiograph from ___.")


def mimic_style_report(rng: np.random.Generator) -> str:
    """A report laid out like MIMIC-CXR's: header, FINDINGS and IMPRESSION sections (SynthCXR's sentences)."""
    from sista_examples.data.synthcxr import _sample_findings, _write_report

    text, _ = _write_report(rng, _sample_findings(rng))
    findings, impression = text.removeprefix("FINDINGS: ").split(" IMPRESSION: ")
    header = REPORT_HEADER.format(
        indication=INDICATIONS[rng.integers(len(INDICATIONS))], comparison=COMPARISONS[rng.integers(len(COMPARISONS))]
    )
    return f"{header} FINDINGS:\n \n {findings}\n \n IMPRESSION:\n \n {impression}\n"


def write_simulated_mimic(root: Path, num_images: int, source_size: int, seed: int = 0) -> int:
    """The fixture of `bench_prepare.py` with a different MIMIC-style report per study; returns the reports."""
    from bench_prepare import write_fixture

    write_fixture(root, num_images, source_size, seed=seed)
    rng = np.random.default_rng(seed)
    reports = sorted((root / "files").glob("p*/p*/s*.txt"))
    for path in reports:
        path.write_text(mimic_style_report(rng))
    return len(reports)


def time_preparation(data_dir: Path, work_dir: Path, num_proc: int, image_size: int) -> dict:
    """`prepare_mimic_cxr` in a fresh process (`bench_prepare.run_in_fresh_process`); the output is kept."""
    from bench_prepare import run_in_fresh_process

    output_dir = work_dir / f"prepared-{num_proc}"
    result = run_in_fresh_process(data_dir, output_dir, num_proc, image_size, "png")
    return {"output_dir": output_dir, "seconds": result["seconds"], "items": result["kept"]}


def time_labeler_pipeline() -> float:
    """Seconds to build the labeler's spaCy pipeline, once per process (forked workers inherit it)."""
    from sista_examples.data.report_labeler import _pipeline

    start = time.perf_counter()
    _pipeline()
    return time.perf_counter() - start


def time_labeler_embeddings(dataset, num_proc: int) -> tuple[dict, dict]:
    """The labeler's embeddings of every row of every split at `num_proc`; returns the timing and the embeddings."""
    from sista_examples.data.report_embeddings import embed_dataset

    start = time.perf_counter()
    embedded, _ = embed_dataset(dataset, encoder="labeler", num_proc=num_proc)
    seconds = time.perf_counter() - start
    embeddings = {name: np.asarray(split["report_embeds"], dtype=np.float32) for name, split in embedded.items()}
    return {"seconds": seconds, "items": sum(len(split) for split in dataset.values())}, embeddings


def time_pretrain_start(train_split, max_length: int, vocab_size: int) -> dict:
    """What `examples/pretrain.py` does to the reports before the model is built, step by step."""
    from sista_examples.data.report_fitting import count_truncated_reports
    from sista_examples.training.tokenizer import train_report_tokenizer

    timings = {}
    start = time.perf_counter()
    reports = train_split["report"]
    timings["read the report column"] = time.perf_counter() - start
    start = time.perf_counter()
    tokenizer = train_report_tokenizer(reports, vocab_size=vocab_size)
    timings["build the WordPiece tokenizer"] = time.perf_counter() - start
    start = time.perf_counter()
    num_truncated = count_truncated_reports(tokenizer, reports, max_length)
    timings["count the truncated reports"] = time.perf_counter() - start
    return {"timings": timings, "items": len(reports), "num_truncated": num_truncated}


def rate_row(step: str, seconds: float, items: int, unit: str, full_size: int) -> dict:
    per_thousand = 1000 * seconds / items
    return {
        "step": step, "items": items, "unit": unit, "seconds": seconds, "seconds_per_1000": per_thousand,
        "full_size": full_size, "projected_minutes": per_thousand * full_size / 1000 / 60,
    }  # fmt: skip


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--num_images", type=int, default=400, help="Images of the simulated fraction (2 per study).")
    parser.add_argument("--num_proc", type=int, nargs="+", default=[1, 2], help="Processes to time each step with.")
    parser.add_argument("--source_size", type=int, default=256, help="Longer side of the fixture JPEGs.")
    parser.add_argument("--image_size", type=int, default=128, help="Longer side of the prepared images.")
    parser.add_argument("--max_length", type=int, default=128, help="pretrain.py's --max_length.")
    parser.add_argument("--vocab_size", type=int, default=3000, help="pretrain.py's --tokenizer_vocab_size.")
    parser.add_argument("--full_reports", type=int, default=MIMIC_CXR_REPORTS)
    parser.add_argument("--full_images", type=int, default=MIMIC_CXR_IMAGES)
    parser.add_argument("--work_dir", default=None, help="Where the fixture and outputs go (default: a temp dir).")
    parser.add_argument("--output", default=None, help="Also write the rows as JSON here.")
    args = parser.parse_args(argv)
    if args.num_images < 20 or args.num_images % 2:
        parser.error(f"--num_images must be an even number of at least 20, got {args.num_images}")

    import datasets

    # every map is computed, not read back from the cache files of an earlier one
    datasets.disable_caching()

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()}", flush=True)
    work_dir = Path(tempfile.mkdtemp(prefix="sista-bench-mimic-", dir=args.work_dir))
    rows = []
    try:
        start = time.perf_counter()
        num_reports = write_simulated_mimic(work_dir / "mimic", args.num_images, args.source_size)
        print(f"simulated MIMIC-CXR-JPG: {args.num_images} JPEGs of {args.source_size} px, {num_reports} reports, "
              f"written in {time.perf_counter() - start:.1f} s", flush=True)  # fmt: skip

        prepared = {}
        for num_proc in args.num_proc:
            result = time_preparation(work_dir / "mimic", work_dir, num_proc, args.image_size)
            prepared[num_proc] = result["output_dir"]
            rows.append(rate_row(f"preparation, --num_proc {num_proc}", result["seconds"], result["items"], "images",
                                 args.full_images))  # fmt: skip
            print(f"  {rows[-1]}", flush=True)
        dataset = datasets.load_from_disk(str(prepared[args.num_proc[0]]))
        pipeline_seconds = time_labeler_pipeline()
        print(f"  the labeler's spaCy pipeline built in {pipeline_seconds:.1f} s (once per process)", flush=True)

        reference = None
        for num_proc in args.num_proc:
            timing, embeddings = time_labeler_embeddings(dataset, num_proc)
            if reference is None:
                reference = embeddings
            elif any(not np.array_equal(reference[name], embeddings[name]) for name in reference):
                raise RuntimeError(f"the labeler's embeddings at num_proc {num_proc} differ from num_proc "
                                   f"{args.num_proc[0]}")  # fmt: skip
            rows.append(rate_row(f"labeler report embeddings, --num_proc {num_proc}", timing["seconds"],
                                 timing["items"], "rows", args.full_images))  # fmt: skip
            print(f"  {rows[-1]}", flush=True)

        start_steps = time_pretrain_start(dataset["train"], args.max_length, args.vocab_size)
        for step, seconds in start_steps["timings"].items():
            rows.append(rate_row(f"pretrain.py start: {step}", seconds, start_steps["items"], "training rows",
                                 args.full_images))  # fmt: skip
        print(f"  {start_steps['num_truncated']} of {start_steps['items']} training reports exceed --max_length "
              f"{args.max_length}", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    print(f"\n{args.num_images} simulated images ({num_reports} reports); projection: linear in the items, to "
          f"{args.full_images:,} images / rows")  # fmt: skip
    print("| step | items | seconds | s per 1,000 | projected to MIMIC-CXR (min) |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['step']} | {row['items']} {row['unit']} | {row['seconds']:.2f} | "
              f"{row['seconds_per_1000']:.2f} | {row['projected_minutes']:.1f} |")
    print(f"load average at the end {os.getloadavg()}")
    print(f"the labeler's pipeline: {pipeline_seconds:.1f} s once per process, not counted in the rates above")
    payload = {"num_images": args.num_images, "num_reports": num_reports, "cpu_count": os.cpu_count(), "rows": rows,
               "labeler_pipeline_seconds": pipeline_seconds}  # fmt: skip
    if args.output:
        Path(args.output).write_text(json.dumps(payload, indent=2) + "\n")
    return payload


if __name__ == "__main__":
    main()
