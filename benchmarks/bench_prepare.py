#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Benchmark of `examples/prepare_datasets.py mimic_cxr` (`sista_examples.data.prepare.prepare_mimic_cxr`): throughput and memory.

Writes a synthetic fixture in the MIMIC-CXR-JPG layout (metadata, split and labeler csv files,
`files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg` and the study reports; the images are smooth noise
of radiograph size, not radiographs), then prepares it several times, each in a fresh process:

* images/s with `--num_proc 1` and `--num_proc 2` (time of `prepare_mimic_cxr` alone, without the
  interpreter start and imports), and the output size per image, PNG and JPEG;
* peak memory for a growing number of images, with 1 and 2 processes, sampled every 50 ms over the
  preparing process and its workers (listed with psutil, measured from Linux's
  `/proc/<pid>/smaps_rollup`): the summed anonymous PSS (heap memory, the pages forked workers share
  with their parent counted once: what the kernel cannot reclaim), the summed PSS (which adds the
  pages of memory-mapped files, such as the Arrow files being read), and the peak RSS of the main
  process and of the largest worker (`resource.getrusage`). Memory that
  does not grow with the number of images stays flat from one row to the next. (`save_to_disk`
  copies the split in batches of up to ~100 MB of images, so the main process's peak grows until
  a split holds ~100 MB, about 800 images at 512 pixels, then stops growing; RSS and PSS also
  count the pages of the memory-mapped Arrow files being read, which the kernel reclaims at will.)

    python benchmarks/bench_prepare.py                       # 250 / 1000 / 2000 images, 2048-pixel sources
    python benchmarks/bench_prepare.py --sizes 200 400 --source_size 1024 --image_size 256
"""

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image


REPO_ROOT = Path(__file__).resolve().parents[1]
REPORT = (
    "FINAL REPORT\n EXAMINATION: CHEST (PA AND LAT)\n\n INDICATION: ___ with cough\n\n"
    " FINDINGS:\n The lungs are clear. No pleural effusion or pneumothorax.\n\n"
    " IMPRESSION:\n No acute cardiopulmonary process.\n"
)
LABELS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion",
    "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
)  # fmt: skip


def write_fixture(root: Path, num_images: int, source_size: int, seed: int = 0) -> None:
    """Write `num_images` frontal JPEGs (two per study) with reports and the three csv files."""
    rng = np.random.default_rng(seed)
    height, width = source_size, int(source_size * 0.83)
    # Smooth noise, so that the JPEGs have a radiograph-like size on disk (not a flat colour).
    coarse = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    metadata, splits, labels = [], [], []
    for index in range(num_images):
        subject, study, dicom_id = f"1{index // 4:07d}", f"5{index // 2:07d}", f"{index:08x}-bench"
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        (folder / f"s{study}").mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.roll(base, index * 37, axis=1) + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"s{study}" / f"{dicom_id}.jpg", quality=90)
        if index % 2 == 0:
            (folder / f"s{study}.txt").write_text(REPORT)
            labels.append([subject, study] + ["1.0" if name == "No Finding" else "" for name in LABELS])
        metadata.append([dicom_id, subject, study, "PA", height, width])
        splits.append([dicom_id, study, subject, "train" if index % 10 else "test"])
    metadata_header = ["dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns"]
    tables = {
        "mimic-cxr-2.0.0-metadata.csv": (metadata_header, metadata),
        "mimic-cxr-2.0.0-split.csv": (["dicom_id", "study_id", "subject_id", "split"], splits),
        "mimic-cxr-2.0.0-chexpert.csv": (["subject_id", "study_id", *LABELS], labels),
    }
    for name, (header, rows) in tables.items():
        with open(root / name, "w", newline="") as file:
            csv.writer(file).writerows([header, *rows])


def subset_fixture(full: Path, root: Path, num_images: int) -> None:
    """A fixture listing the first `num_images` images of `full`, sharing its image and report files."""
    root.mkdir(parents=True)
    (root / "files").symlink_to(full / "files", target_is_directory=True)
    for name in ("mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-2.0.0-split.csv", "mimic-cxr-2.0.0-chexpert.csv"):
        lines = (full / name).read_text().splitlines(keepends=True)
        (root / name).write_text("".join(lines[: num_images + 1]))


def prepare_once(data_dir: str, output_dir: str, num_proc: int, image_size: int, image_format: str) -> dict:
    """Run in a fresh worker process: time `prepare_mimic_cxr` and report its own and its workers' peak RSS."""
    # Imported here, in the worker process, so that its own import cost and memory are measured.
    from sista_examples.data.prepare import MimicCxrArguments, prepare_mimic_cxr

    args = MimicCxrArguments(
        data_dir=data_dir, output_dir=output_dir, num_proc=num_proc, image_size=image_size, image_format=image_format
    )
    start = time.perf_counter()
    dataset_dict = prepare_mimic_cxr(args)
    seconds = time.perf_counter() - start
    output_bytes = sum(path.stat().st_size for path in Path(output_dir).rglob("*.arrow"))
    kept = sum(len(dataset) for dataset in dataset_dict.values())
    return {
        "seconds": seconds,
        "kept": kept,
        "bytes_per_image": output_bytes / max(kept, 1),
        # ru_maxrss is in KiB on Linux; RUSAGE_CHILDREN gives the largest finished worker.
        "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def proportional_memory(pid: int) -> tuple[int, int]:
    """(anonymous PSS, PSS) of a process in bytes, from Linux's /proc/<pid>/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) * 1024
    return fields["Pss_Anon"], fields["Pss"]


def run_in_fresh_process(data_dir: Path, output_dir: Path, num_proc: int, image_size: int, image_format: str) -> dict:
    """Run [`prepare_once`] in a child process while sampling the memory of its process tree."""
    environment = dict(os.environ)
    command = [sys.executable, __file__, "--worker", str(data_dir), str(output_dir), str(num_proc), str(image_size)]
    child = subprocess.Popen(
        [*command, image_format], env=environment, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    peaks, done = {"anonymous": 0, "pss": 0}, threading.Event()

    def sample():
        parent = psutil.Process(child.pid)
        while not done.is_set():
            try:
                memory = [proportional_memory(process.pid) for process in [parent, *parent.children(recursive=True)]]
            except (psutil.Error, OSError):  # a worker ended between listing and reading it
                continue
            peaks["anonymous"] = max(peaks["anonymous"], sum(anonymous for anonymous, _ in memory))
            peaks["pss"] = max(peaks["pss"], sum(total for _, total in memory))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = child.communicate()
    done.set()
    sampler.join()
    if child.returncode:
        raise RuntimeError(f"preparation failed (exit code {child.returncode}): {' '.join(command)}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update({f"peak_{name}_tree_mb": value / 2**20 for name, value in peaks.items()})
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 1000, 2000], help="Numbers of images.")
    parser.add_argument("--throughput_size", type=int, default=500, help="Images of the num_proc 1 vs 2 runs.")
    parser.add_argument("--source_size", type=int, default=2048, help="Longer side of the fixture JPEGs.")
    parser.add_argument("--image_size", type=int, default=512, help="Longer side of the prepared images.")
    parser.add_argument("--work_dir", default=None, help="Where the fixture and outputs go (default: a temp dir).")
    args = parser.parse_args()

    work_dir = Path(tempfile.mkdtemp(prefix="sista-bench-prepare-", dir=args.work_dir))
    try:
        largest = max([*args.sizes, args.throughput_size])
        start = time.perf_counter()
        write_fixture(work_dir / "full", largest, args.source_size)
        print(f"fixture: {largest} JPEGs of {int(args.source_size * 0.83)}x{args.source_size} in "
              f"{time.perf_counter() - start:.0f} s")  # fmt: skip
        runs = {(size, num_proc, "png") for size in [*args.sizes, args.throughput_size] for num_proc in (1, 2)}
        runs.add((args.throughput_size, 2, "jpeg"))
        print("| images | num_proc | format | images/s | KB/image | peak anonymous PSS, all processes (MB) | "
              "peak PSS, all processes (MB) | peak RSS main / largest worker (MB) |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for size, num_proc, image_format in sorted(runs):
            data_dir = work_dir / f"data-{size}"
            if not data_dir.exists():
                subset_fixture(work_dir / "full", data_dir, size)
            output_dir = work_dir / f"out-{size}-{num_proc}-{image_format}"
            result = run_in_fresh_process(data_dir, output_dir, num_proc, args.image_size, image_format)
            shutil.rmtree(output_dir)
            print(
                f"| {result['kept']} | {num_proc} | {image_format} | {result['kept'] / result['seconds']:.1f} | "
                f"{result['bytes_per_image'] / 1024:.0f} | {result['peak_anonymous_tree_mb']:.0f} | "
                f"{result['peak_pss_tree_mb']:.0f} | "
                f"{result['peak_rss_main_mb']:.0f} / {result['peak_rss_worker_mb']:.0f} |",
                flush=True,
            )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        data_dir, output_dir, num_proc, image_size, image_format = sys.argv[2:7]
        print(json.dumps(prepare_once(data_dir, output_dir, int(num_proc), int(image_size), image_format)))
    else:
        main()
