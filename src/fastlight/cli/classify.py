"""Classify texts with a trained ULMFiT classifier run: one text, or every row of a CSV.

    fastlight classify <text_clf run> "I loved this film"        # prints: pos  0.973
    fastlight classify <text_clf run> reviews.csv [--text-col text] [--out reviews_classified.csv]

The run is rebuilt from its folder alone (config.yaml, vocab.json, classes.json, a checkpoint);
texts are tokenized as its training data was. A CSV gets two columns added, `predicted` and
`probability`, and is written beside it (or to --out).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a text_clf run folder (outputs/text_clf/<date>/<time>-<id>)")
    parser.add_argument("text", help="a text to classify, or a .csv file with one text per row")
    parser.add_argument("--text-col", default="text", help="the CSV's text column (default: text)")
    parser.add_argument("--out", help="the CSV to write (default: <csv>_classified.csv beside it)")
    parser.add_argument("--ckpt", default="best", help="best, last or a checkpoint path (default: best)")
    parser.add_argument("--batch-size", type=int, default=32, help="documents per forward pass")


def run(args) -> int:
    from pathlib import Path

    from fastlight.cli._runs import run_task
    from fastlight.errors import DataError, FastlightError

    task = run_task(args.run_dir)
    if task != "text_clf":
        raise FastlightError(f"{args.run_dir} is a {task} run; classify works on text_clf runs")
    from fastlight.tasks.text_clf import classify_texts

    source = Path(args.text)
    if source.suffix.lower() != ".csv":
        (label, prob), = classify_texts(args.run_dir, [args.text], args.batch_size, args.ckpt)
        print(f"{label}\t{prob:.3f}")
        return 0
    import pandas as pd

    if not source.is_file():
        raise DataError(f"{source}: no such CSV file")
    frame = pd.read_csv(source)
    if args.text_col not in frame.columns:
        raise DataError(f"{source} has no column {args.text_col!r} (it has {', '.join(map(str, frame.columns))}); "
                        "name the text column with --text-col")
    results = classify_texts(args.run_dir, frame[args.text_col].fillna("").astype(str).tolist(),
                             args.batch_size, args.ckpt)
    frame["predicted"] = [label for label, _ in results]
    frame["probability"] = [round(p, 4) for _, p in results]
    out = Path(args.out) if args.out else source.with_name(f"{source.stem}_classified.csv")
    frame.to_csv(out, index=False)
    print(f"wrote {out} ({len(frame)} rows)")
    return 0
