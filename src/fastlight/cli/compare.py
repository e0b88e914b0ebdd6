"""Compare runs from their own records: a ranked table and a self-contained report.html.

    fastlight compare outputs/multirun/<date>/<time>-<id>      # a sweep folder
    fastlight compare <run folder> <run folder> ...            # hand-picked runs

Reads only what the runs left in their folders (summary.json, metrics.csv, config.yaml): no W&B,
no server. The same as `python -m fastlight.compare` (fastlight.compare does the work).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep folder, or run folders")
    parser.add_argument("--html", type=Path, help="report path (default: <folder>/report.html, or ./compare.html)")
    parser.add_argument("--no-html", action="store_true", help="print the table only")


def run(args) -> int:
    from fastlight.compare import main

    argv = [str(p) for p in args.paths]
    if args.html is not None:
        argv += ["--html", str(args.html)]
    if args.no_html:
        argv.append("--no-html")
    return main(argv) or 0
