"""Logging: structlog, JSON lines by default, a readable console format on a terminal."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

_configured = False
LEVEL_VARIABLE = "CDCFAST_LOG_LEVEL"  # how the supervisor's level reaches its parser and writer processes


def configure(level: str | None = None, json: bool | None = None) -> None:
    global _configured
    if level is None:
        level = os.environ.get(LEVEL_VARIABLE, "INFO")
    else:
        os.environ[LEVEL_VARIABLE] = level
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        # One write per line, newline included: the supervisor's children share its stderr, and
        # print's two writes mix lines of several processes when stderr is unbuffered (containers).
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    _configured = True


def get_logger(component: str, **context: Any) -> Any:
    if not _configured:
        configure()
    return structlog.get_logger().bind(component=component, **context)
