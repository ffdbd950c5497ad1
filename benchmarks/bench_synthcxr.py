#!/usr/bin/env python
"""Benchmark SynthCXR generation: images per second and total seconds.

    python benchmarks/bench_synthcxr.py --num_images 10000 --image_size 224 --num_proc 2

Generation writes into a fresh temporary `datasets` cache, so nothing is reused between runs;
``--save`` also times `save_to_disk`. Besides wall-clock time it prints the CPU time of this
process and its workers: on a shared machine wall time depends on the other load, CPU time
much less, and CPU seconds / cores is the wall time to expect on idle cores.
"""

import argparse
import os
import resource
import tempfile
import time

import datasets

from sista_examples.data.synthcxr import generate_synthcxr


def _cpu_seconds() -> float:
    # This process plus its finished children (the generation workers).
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=10000)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--num_proc", type=int, default=os.cpu_count())
    parser.add_argument("--save", action="store_true", help="Also time DatasetDict.save_to_disk.")
    args = parser.parse_args()
    datasets.disable_progress_bars()

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as cache_dir:
        start, start_cpu = time.perf_counter(), _cpu_seconds()
        dataset = generate_synthcxr(
            num_pretrain=args.num_images,
            num_train=0,
            num_validation=0,
            num_test=0,
            image_size=args.image_size,
            num_proc=args.num_proc,
            cache_dir=cache_dir,
        )
        seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - start_cpu
        workers = args.num_proc or 1
        print(
            f"generate: {args.num_images} images at {args.image_size}x{args.image_size} px, num_proc={args.num_proc}, "
            f"cpus={os.cpu_count()}, load average before {load_before:.1f}: {seconds:.1f} s total, "
            f"{args.num_images / seconds:.1f} images/s"
        )
        print(
            f"cpu: {cpu_seconds:.1f} s ({1000 * cpu_seconds / args.num_images:.1f} ms/image); on {workers} idle cores "
            f"~{cpu_seconds / workers:.1f} s, {args.num_images * workers / cpu_seconds:.1f} images/s"
        )
        if args.save:
            start = time.perf_counter()
            dataset.save_to_disk(os.path.join(cache_dir, "saved"))
            seconds = time.perf_counter() - start
            print(f"save_to_disk: {seconds:.1f} s")


if __name__ == "__main__":
    main()
