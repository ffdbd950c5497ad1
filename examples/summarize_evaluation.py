#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Print what a model learned: the zero-shot AUROC, image→report Recall@1/10 (paired and same-label) and the pointing
game that `zero_shot.py`, `retrieval.py` and `visualize_grounding.py` wrote into one folder, each beside its chance
level or baseline; the block is also written to `learned_metrics.txt` there. `examples/demo.sh` ends with it.

    python examples/summarize_evaluation.py --evaluation_dir outputs/sista-small-demo/evaluation
"""

from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from sista_examples.evaluation.summary import learned_metrics_block, read_evaluation_results


@dataclass
class SummaryArguments:
    evaluation_dir: str = field(metadata={"help": "The --output_dir of the three evaluation scripts."})


def main(cli_args: list[str] | None = None) -> str:
    (arguments,) = HfArgumentParser(SummaryArguments).parse_args_into_dataclasses(args=cli_args)
    results = read_evaluation_results(arguments.evaluation_dir)
    block = learned_metrics_block(results)
    (Path(arguments.evaluation_dir) / "learned_metrics.txt").write_text(block + "\n")
    overview = results["grounding"].get("overview_figure")
    print("\n" + block + (f"\nGrounding picture: {overview}" if overview else ""), flush=True)
    return block


if __name__ == "__main__":
    main()
