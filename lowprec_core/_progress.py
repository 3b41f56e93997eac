"""Progress of long steps, as log records the CLI turns into a bar (terminal) or lines (pipeline log).

The library only reports; how progress looks belongs to whoever runs it.
"""

from __future__ import annotations

import logging

LOGGER = logging.getLogger("lowprec.progress")


def report(step: str, done: int, total: int | None = None, detail: str = "") -> None:
    """`step` has finished `done` units of `total` (None: unknown)."""
    LOGGER.info(
        "%s %d%s%s", step, done, f"/{total}" if total else "", f": {detail}" if detail else "",
        extra={"progress": (step, done, total, detail)},
    )
