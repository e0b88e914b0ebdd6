"""Clean a vision run's images (fastai's ImageCleaner): rank them by loss, review, move the bad ones.

    fastlight clean <vision run>                          # -> <run>/cleaning/top_losses.csv, review.html
    fastlight clean <vision run> --apply decisions.csv    # carry out what review.html exported

Lesson 2's data cleaning: the images a trained model finds hardest (highest loss) are where wrong
labels and images that belong to no class gather. `clean` scores every training and validation
image of an ImageFolder run (no augmentation) and writes `cleaning/top_losses.csv` (path relative
to the data folder, split, label, prediction, loss, probability of the prediction, highest loss
first) and `cleaning/review.html`, a self-contained page showing the top `--top` images where a
person marks each keep / delete / relabel and exports `decisions.csv` (path, action, new_label).
`--apply` moves files, never deletes them: `delete` into `<data folder>/.removed/<same path>`,
`relabel` into the new class's folder of the same split; it prints every move. Nothing moves
unless every row of the decisions is valid. Retrain afterwards to learn from the cleaned data.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

ACTIONS = ("keep", "delete", "relabel")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a vision run folder (data=folder: train/<class>/, valid/<class>/)")
    parser.add_argument("--apply", metavar="DECISIONS", type=Path, help="the CSV exported from review.html")
    parser.add_argument("--top", type=int, default=200, help="how many images review.html shows (default 200)")
    parser.add_argument("--data", type=Path, help="with --apply: the image folder to change (default: the run's "
                                                  "data.path), e.g. a copy of it")
    parser.add_argument("--dry-run", action="store_true", help="with --apply: print the moves, move nothing")
    parser.add_argument("--ckpt", default="best", help="best, last or a checkpoint path (default: best)")


def run(args) -> int:
    if args.apply is not None:
        return apply(args.run_dir, args.apply, data=args.data, dry_run=args.dry_run)
    return review(args.run_dir, top=args.top, ckpt=args.ckpt)


def data_folder(run_dir: Path, data: Path | None = None) -> tuple[Path, str]:
    """(the run's image folder, the name of its training folder), from config.yaml alone."""
    from omegaconf import OmegaConf

    from fastlight.data.vision import resolve_path
    from fastlight.errors import FastlightError

    config = Path(run_dir) / "config.yaml"
    if not config.is_file():
        raise FastlightError(f"{run_dir} is not a fastlight run folder (no config.yaml)")
    cfg = OmegaConf.load(config)
    if not str(cfg.get("data", {}).get("_target_", "")).startswith("fastlight.data.vision.image_folder"):
        raise FastlightError(f"{run_dir} was not trained on an image folder (data=folder); clean needs one")
    root = Path(data) if data is not None else resolve_path(cfg.data.path)
    if not root.is_dir():
        raise FastlightError(f"the image folder {root} is not there; pass --data <folder>")
    return root.resolve(), str(cfg.data.get("train") or "train")


# --- rank and review ----------------------------------------------------------------------------------
def review(run_dir: str | Path, top: int = 200, ckpt: str = "best") -> int:
    from fastlight.cli._review_page import render
    from fastlight.errors import FastlightError
    from fastlight.interpret.vision import rank_by_loss
    from fastlight.runs import load_run

    run_dir = Path(run_dir)
    root, _ = data_folder(run_dir)
    _, datamodule, task = load_run(run_dir, ckpt)
    if getattr(task, "problem", None) != "single_label":
        raise FastlightError(f"{run_dir} is not a single-label vision run; clean ranks images by their class's loss")
    table = rank_by_loss(task, datamodule)
    table["path"] = [str(Path(p).resolve().relative_to(root)) for p in table.path]
    out = run_dir / "cleaning"
    out.mkdir(exist_ok=True)
    table.to_csv(out / "top_losses.csv", index=False)
    page = out / "review.html"
    page.write_text(render(table.head(top), root, datamodule.classes, run_dir.resolve(), len(table)), encoding="utf-8")
    wrong = int((table.label != table.prediction).sum())
    print(f"[clean] {len(table)} images ranked by loss ({wrong} predicted as another class): {out / 'top_losses.csv'}")
    for r in table.head(5).itertuples():
        print(f"[clean]   {r.loss:7.3f}  {r.label} -> {r.prediction} ({r.probability:.2f})  {r.path}")
    print(f"[clean] review the top {min(top, len(table))} in {page.resolve().as_uri()}, export decisions.csv, then:")
    print(f"[clean]   fastlight clean {run_dir} --apply decisions.csv")
    return 0


# --- apply the decisions --------------------------------------------------------------------------------
def read_decisions(path: Path, root: Path, train: str) -> list[tuple[Path, str, str]]:
    """[(file relative to root, action, new label)]; DataError naming the first bad row."""
    from fastlight.errors import DataError

    if not path.is_file():
        raise DataError(f"no decisions file at {path}; export it from review.html")
    classes = sorted(p.name for p in (root / train).iterdir() if p.is_dir()) if (root / train).is_dir() else []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"path", "action"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path} needs the columns path, action, new_label (no {', '.join(sorted(missing))})")
        rows = []
        for n, row in enumerate(reader, start=2):
            rel, action, label = Path(row["path"] or ""), (row["action"] or "").strip(), (row.get("new_label") or "").strip()
            if rel.is_absolute():
                rel = rel.resolve()
                if not rel.is_relative_to(root):
                    raise DataError(f"{path} line {n}: {rel} is not inside the data folder {root}")
                rel = rel.relative_to(root)
            if ".." in rel.parts or len(rel.parts) < 3 or rel.parts[0] == ".removed":
                raise DataError(f"{path} line {n}: {rel} is not an image of the data folder (<split>/<class>/<file>)")
            if action not in ACTIONS:
                raise DataError(f"{path} line {n}: action {action!r} must be one of {', '.join(ACTIONS)}")
            if action == "relabel" and label not in classes:
                raise DataError(f"{path} line {n}: new_label {label!r} is not a class of this data "
                                f"({', '.join(classes)})")
            rows.append((rel, action, label))
    return rows


def _free(dest: Path) -> Path:
    """`dest`, or `name_1.ext`, `name_2.ext`, ... if it is taken: a move never overwrites a file."""
    k, free = 0, dest
    while free.exists():
        k += 1
        free = dest.with_name(f"{dest.stem}_{k}{dest.suffix}")
    return free


def apply(run_dir: str | Path, decisions: Path, data: Path | None = None, dry_run: bool = False) -> int:
    root, train = data_folder(Path(run_dir), data)
    moves, skipped = [], []
    for rel, action, label in read_decisions(Path(decisions), root, train):
        if action == "keep" or (action == "relabel" and rel.parts[1] == label):
            continue
        if not (root / rel).is_file():
            skipped.append(rel)  # already moved by an earlier --apply, or gone
            continue
        dest = Path(".removed", *rel.parts) if action == "delete" else Path(rel.parts[0], label, *rel.parts[2:])
        moves.append((rel, dest, action))
    verb = "would move" if dry_run else "moved"
    for rel, dest, action in moves:
        target = _free(root / dest)
        if not dry_run:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(root / rel, target)
        print(f"{verb} {rel} -> {target.relative_to(root)}  ({action})")
    for rel in skipped:
        print(f"skipped {rel}: not in {root} (already moved?)")
    n_del = sum(a == "delete" for *_, a in moves)
    print(f"[clean] {verb} {len(moves)} file(s) in {root}: {n_del} to .removed/, {len(moves) - n_del} relabelled"
          + (f"; {len(skipped)} not found" if skipped else ""))
    return 0
