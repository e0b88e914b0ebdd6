"""The `fastlight` command: one verb per job on finished runs (`fastlight <verb> <run folder> ...`).

Training stays `python train.py ...`; everything done afterwards with a run's folder is a verb:

    fastlight compare <sweep folder | run folders...>     ranked table + report.html
    fastlight recommend <collab run> --user 42 | --new-user | --like "Star Wars"
    fastlight predict <run> new_rows.csv | images/        tabular rows or a folder of images
    fastlight clean <vision run> [--apply decisions.csv]  fastai's ImageCleaner

A verb is a module of this package, `fastlight/cli/<verb>.py` (`_` in the name is `-` on the
command line; modules starting with `_` are helpers, not verbs). Its docstring's first line is its
help, and it defines `add_arguments(parser)` and `run(args) -> int` (the exit code). This
dispatcher finds the verbs by scanning the package, so adding a verb is adding a file. The verb
list is read from the modules' source without importing them, and only the chosen verb is imported,
so `fastlight --help` never imports torch or Lightning; a verb imports them inside `run`.
A `FastlightError` raised by a verb is printed as one line, with its exit code (2).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
import sys
from pathlib import Path


def verbs() -> dict[str, tuple[str, str]]:
    """{verb: (module name, one-line help)} for every verb module in this package, sorted."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg or info.name.startswith("_"):
            continue
        source = Path(info.module_finder.path, f"{info.name}.py")
        doc = ast.get_docstring(ast.parse(source.read_text(encoding="utf-8"))) if source.is_file() else None
        found[info.name.replace("_", "-")] = (info.name, (doc or "").strip().split("\n")[0])
    return dict(sorted(found.items()))


def _chosen(argv: list[str], names) -> str | None:
    """The verb on the command line: its first word that is not an option."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in names else None


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    table = verbs()
    parser = argparse.ArgumentParser(
        prog="fastlight",
        description="Commands on finished fastlight runs (train with: python train.py task=<task> ...).",
        epilog="`fastlight <verb> --help` shows a verb's arguments.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    chosen = _chosen(argv, table)
    for verb, (module, help_line) in table.items():
        p = sub.add_parser(verb, help=help_line, description=help_line)
        if verb == chosen:  # only the verb that runs is imported
            mod = importlib.import_module(f"{__name__}.{module}")
            p.description = (mod.__doc__ or help_line).strip()
            p.formatter_class = argparse.RawDescriptionHelpFormatter
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from fastlight.errors import FastlightError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except FastlightError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return e.exit_code
