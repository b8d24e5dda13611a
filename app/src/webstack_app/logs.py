"""Logging to stderr, which gunicorn and systemd's journal both collect."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Give the app's loggers one stderr handler (once) and the configured level."""
    logger = logging.getLogger("webstack_app")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S %z"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
