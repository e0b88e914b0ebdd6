"""Recommend movies with a trained collab run: for a user, for a new user, or like a movie.

    fastlight recommend <run folder> --user 42           # the user's top unseen movies
    fastlight recommend <run folder> --new-user          # cold start: by movie bias
    fastlight recommend <run folder> --like "Star Wars"  # nearest movies by their factors

The run is rebuilt from its folder (fastlight.runs.load_run); its ratings must be the ones it was
trained on (the checkpoint keeps the user and movie ids and is checked against them).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="the run folder (outputs/collab/<date>/<time>-<id>)")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="an existing user's id, as in the ratings file")
    who.add_argument("--new-user", action="store_true", help="a user with no ratings yet (by movie bias)")
    who.add_argument("--like", metavar="TITLE", help="movies whose factors are closest to this one's")
    parser.add_argument("-k", type=int, default=10, help="how many movies (default 10)")
    parser.add_argument("--ckpt", default="best", help="best, last or a checkpoint path (default best)")


def load_for_recommend(run_dir: str, ckpt: str = "best"):
    """(model in eval mode, datamodule) of a finished collab run; DataError if the data changed."""
    from fastlight.errors import DataError, FastlightError
    from fastlight.runs import load_run
    from fastlight.tasks.collab import CollabTask

    changed = DataError(
        f"the ratings no longer match the ones {run_dir} was trained on (different users or items); "
        "retrain, or point data.root / FASTLIGHT_DATA at the original data"
    )
    try:
        _, dm, task = load_run(run_dir, ckpt=ckpt)
    except RuntimeError as e:  # the embedding tables' sizes differ from the checkpoint's
        if "size mismatch" in str(e):
            raise changed from None
        raise
    if not isinstance(task, CollabTask):
        raise FastlightError(f"{run_dir} is a {type(task).__name__} run, not a collab run")
    saved = task.saved_ids
    if saved is not None and (saved["users"] != dm.user_ids.tolist() or saved["items"] != dm.item_ids.tolist()):
        raise changed
    return task.model.eval(), dm


def run(args) -> int:
    from fastlight.interpret import collab as interpret

    model, dm = load_for_recommend(args.run_dir, args.ckpt)
    if args.user is not None:
        user = interpret.find_user(dm, args.user)
        print(f"Top {args.k} movies user {args.user} has not rated, by predicted rating:")
        table = interpret.recommend_for_user(model, dm, user, args.k)
    elif args.new_user:
        print(f"Top {args.k} movies for a new user ({interpret.cold_start_rule(model)}):")
        table = interpret.recommend_for_new_user(model, dm, args.k)
    else:
        item = interpret.find_item(dm, args.like)
        print(f"The {args.k} movies whose factors are closest to {dm.titles[item]!r} (cosine similarity):")
        table = interpret.nearest_items(model, dm, item, args.k)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return 0
