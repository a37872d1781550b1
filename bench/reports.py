"""What every benchmark's report carries (the command, the date, the threads, the seconds), and writing it."""

from __future__ import annotations

import datetime
import json
import sys
import time

import torch

from febm.files import write_atomic


def stamped(report: dict, prog: str, argv: list[str] | None, started: float) -> dict:
    """``report`` with the command that reproduces it, the date, torch's threads and the seconds since ``started``
    (a time.perf_counter() reading)."""
    return {"command": " ".join([f"python -m {prog}", *(argv if argv is not None else sys.argv[1:])]),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "torch_threads": torch.get_num_threads(), **report,
            "seconds": round(time.perf_counter() - started, 1)}


def save(report: dict, out: str | None = None, markdown: str | None = None, text: str | None = None) -> None:
    """The report as JSON at ``out`` and ``text`` (its Markdown) at ``markdown``, each written whole or not at all."""
    if out:
        write_atomic(out, json.dumps(report, indent=1) + "\n")
    if markdown and text is not None:
        write_atomic(markdown, text + "\n")
