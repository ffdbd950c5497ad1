#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Releases a SISTA checkpoint (the pre-trained model or a fine-tuned task head) on the Hugging Face Hub.

    python examples/push_to_hub.py --model_dir outputs/sista-synthcxr --repo_id me/sista-synthcxr \
        --results outputs/eval --tag v0.1.0 --commit_message "SISTA pre-trained on SynthCXR"

It builds the exact folder to upload (weights, config with `auto_map`, processor, tokenizer, the three code files
and a model card filled from the results), loads it in a clean interpreter through the Auto classes, then uploads
it in one commit. `--dry_run --output_dir DIR` builds and checks the folder offline and pushes nothing. Pushing needs
the network and a token (`hf auth login`, `HF_TOKEN` or `--token`); both are checked before any work, and a failure
prints one line. The steps are those of `sista_examples.hub.release`.
"""

import logging
import sys
from dataclasses import dataclass, field

from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from transformers import HfArgumentParser

from sista_examples.hub.model_card import DEFAULT_LICENSE
from sista_examples.hub.release import (
    ReleaseError,
    check_release_folder,
    prepare_release_folder,
    push_sista_to_hub,
    resolve_token,
)
from sista_examples.utils import setup_logging


logger = logging.getLogger(__name__)


@dataclass
class ReleaseArguments:
    model_dir: str = field(metadata={"help": "save_pretrained folder of a SISTA model or task head"})
    repo_id: str | None = field(default=None, metadata={"help": "Hub repository, owner/name"})
    revision: str | None = field(default=None, metadata={"help": "branch to commit to (created if absent)"})
    tag: str | None = field(default=None, metadata={"help": "tag for the new commit; the card pins it"})
    private: bool | None = field(default=None, metadata={"help": "visibility of a newly created repository"})
    commit_message: str | None = field(default=None, metadata={"help": "commit message"})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: hf auth login / HF_TOKEN)"})
    results: list[str] | None = field(default=None, metadata={"help": "results JSON files or folders for the card"})
    processor_dir: str | None = field(default=None, metadata={"help": "folder with the processor, if not model_dir"})
    run_dir: str | None = field(default=None, metadata={"help": "folder with training_args.bin / trainer_state.json"})
    base_model: str | None = field(default=None, metadata={"help": "Hub id this model was trained from"})
    license: str | None = field(
        default=None,
        metadata={"help": f"licence of the weights (default: {DEFAULT_LICENSE}, or, for weights trained on MIMIC-CXR "
                          "or CheXpert, 'other' with that data's use agreement)"},
    )
    datasets: list[str] | None = field(
        default=None,
        metadata={"help": "dataset names for the card, a Hub id or a plain name (never a local path): NAME, or "
                          "LOCAL=NAME to rename the dataset folder a result or the training read "
                          "(data/chexpert=CheXpert)"},
    )
    output_dir: str | None = field(default=None, metadata={"help": "build the release folder here (kept)"})
    overwrite: bool = field(default=False, metadata={"help": "replace a non-empty --output_dir"})
    dry_run: bool = field(default=False, metadata={"help": "build and check the folder, push nothing"})
    skip_check: bool = field(default=False, metadata={"help": "do not load the folder in a clean interpreter"})


def run(args: ReleaseArguments) -> int:
    push = not args.dry_run and args.repo_id is not None
    if not push and args.output_dir is None:
        raise ReleaseError("Nothing to do: pass --repo_id to push, or --output_dir (with --dry_run) to build.")
    token = resolve_token(args.token) if push else None  # offline or no token: stop before any work
    if args.output_dir is not None:  # the folder alone (--dry_run), or a kept copy of what is pushed
        folder = prepare_release_folder(
            args.model_dir,
            args.output_dir,
            args.results,
            args.processor_dir,
            args.run_dir,
            args.repo_id,
            args.tag or args.revision,
            args.base_model,
            args.license,
            args.overwrite,
            args.datasets,
        )
        if not push:
            if not args.skip_check:
                summary = check_release_folder(folder)
                logger.info(
                    "Loads through the Auto classes (transformers %s): %s", summary["transformers"], summary["classes"]
                )
            return 0
    push_sista_to_hub(
        args.model_dir,
        args.repo_id,
        revision=args.revision,
        private=args.private,
        commit_message=args.commit_message,
        token=token,
        card_results=args.results,
        processor_dir=args.processor_dir,
        run_dir=args.run_dir,
        base_model=args.base_model,
        tag=args.tag,
        license=args.license,
        check=not args.skip_check,
        datasets=args.datasets,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(ReleaseArguments, description=__doc__.split("\n\n")[1]).parse_args_into_dataclasses(
        args=argv
    )
    setup_logging()
    # the expected failures (no token, offline, a bad folder, the Hub refusing) are one line, not a traceback
    try:
        return run(args)
    except (
        ReleaseError,
        FileNotFoundError,
        ValueError,
        HfHubHTTPError,
        HFValidationError,
        OfflineModeIsEnabled,
    ) as error:
        message = " ".join(str(error).split())
        print(f"push_to_hub.py: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
