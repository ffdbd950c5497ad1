# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Small helpers shared by every script."""

import logging


LOG_FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"


def setup_logging(training_args=None) -> None:
    """INFO logs on the main process (every process without `training_args`), WARNING on the others."""
    is_main = training_args is None or training_args.process_index == 0
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO if is_main else logging.WARNING)
