# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Small helpers shared by every script."""

import logging
import tempfile
from pathlib import Path


LOG_FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"


def setup_logging(training_args=None) -> None:
    """INFO logs on the main process (every process without `training_args`), WARNING on the others."""
    is_main = training_args is None or training_args.process_index == 0
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO if is_main else logging.WARNING)


def check_output_dir_writable(output_dir: str, argument: str = "--output_dir") -> None:
    """A clear error now rather than a failed checkpoint or results file after an hour of work: creates the folder
    and writes (then removes) a file in it."""
    path = Path(output_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
            pass
    except OSError as error:
        raise ValueError(f"{argument} {output_dir} is not writable: {error.strerror or error}.") from error
