"""ULMFiT's three steps on imdb_sample (800 train / 200 valid reviews), fastlight against fastai, same budget.

    python tests/benchmarks/bench_text_clf.py                         # fastai's model size (400/1152/3)
    python tests/benchmarks/bench_text_clf.py --emb 64 --hid 128      # a smaller AWD-LSTM (busy CPU)
    python tests/benchmarks/bench_text_clf.py --general none          # skip step 1
    python tests/benchmarks/bench_text_clf.py --emb 128 --hid 384 --general none --lm-epochs 8 --lm-lr 1e-2 \
        --clf-schedule unfrozen --clf-epochs 12 --clf-lr 5e-3            # a from-scratch budget that learns here
    ... --precision bf16 --fastai-precision 32   # fastlight's bf16-mixed against fastai's only CPU precision
    ... --seeds 3                                # seeds 0-2: medians, and the paired accuracy gap

  step 1  a language model on a general corpus available here (`--general`: ptb's valid file, or
          shakespeare), from scratch (where WT103 can be downloaded, `model.pretrained=wt103` replaces it)
  step 2  that model fine-tuned on the reviews' texts (vocabulary matched, new words at the mean row)
  step 3  the classifier from the step-2 encoder: the lesson's gradual unfreezing (5 epochs), or with
          `--clf-schedule unfrozen` one fit_one_cycle(--clf-epochs, --clf-lr) with nothing frozen

fastai runs steps 2-3 the lesson's way (`language_model_learner` + `text_classifier_learner`,
`load_encoder`, freeze_to(-2), freeze_to(-3), unfreeze) with the same sizes, lrs and epochs, from
random weights at step 2 (fastai has no step-1 corpus here either: only WT103). Reported: each
step's seconds, the classifier's seconds per epoch, final validation accuracy, and tokenization time.

Why the lesson's schedule stays at chance here: it is built for an encoder that already knows
English (WT103). From random weights, 5 epochs of 25 batches with the encoder's groups at
lr/20/2.6**k leave the encoder where step 2 left it, and a barely trained LM's features carry no
sentiment, so the head predicts the majority class (0.535 of the 200 validation reviews). The
classifier does learn when the whole network trains longer (`--clf-schedule unfrozen`).
"""

from __future__ import annotations

import argparse
import math
import time

import common
import torch


def size_overrides(args) -> list[str]:
    return [f"model.emb_sz={args.emb}", f"model.n_hid={args.hid}", f"model.n_layers={args.layers}"]


def fastlight_pipeline(args, root, seed: int) -> dict:
    quiet = [f"seed={seed}", *(["trainer.precision=bf16-mixed"] if args.precision == "bf16" else []), "logger=csv", "callbacks.progress_bar.refresh_rate=0", "trainer.num_sanity_val_steps=0",
             f"torch_threads={args.threads}", f"data.root={root}", "data.n_workers=2"]
    out, weights = {}, []
    # The same work as fastai's TextDataLoaders.from_df below (read, tokenize, vocabulary, numericalize),
    # with the cache off so the reviews are tokenized afresh. spaCy is imported first, as fastai's
    # import (outside its timer) does; fastlight imports it only on a cache miss.
    import spacy  # noqa: F401

    from fastlight.data.text.lm import IMDbSample

    t = time.perf_counter()
    IMDbSample(root=str(root), cache=False, n_workers=2, seed=seed).setup()
    out["tokenize s"] = time.perf_counter() - t
    if args.general != "none":
        t = time.perf_counter()
        data = ["data=ptb", "data.train=valid"] if args.general == "ptb" else ["data=shakespeare"]
        s, general = common.run_fastlight(["task=lm", *data, *size_overrides(args), *quiet, f"data.bptt={args.bptt}",
                                           f"trainer.max_epochs={args.general_epochs}", "optim.lr=2e-3",
                                           "model.drop_mult=1.0"], prefix="bench_lm1_", quiet=True)
        out["step 1 s"] = time.perf_counter() - t
        out["step 1 ppl"] = s["metrics"].get("val/perplexity")
        weights = [f"model.weights_path={general}"]
    t = time.perf_counter()
    s, lm = common.run_fastlight(["task=lm", "data=imdb_sample", *size_overrides(args), *quiet, *weights,
                                  f"data.bptt={args.bptt}", f"trainer.max_epochs={args.lm_epochs}",
                                  f"optim.lr={args.lm_lr}", "model.drop_mult=0.3"], prefix="bench_lm2_", quiet=True)
    out["step 2 s"] = time.perf_counter() - t
    out["step 2 ppl"] = s["metrics"].get("val/perplexity")
    t = time.perf_counter()
    schedule = [] if args.clf_schedule == "ulmfit" else ["task.stages=null", f"trainer.max_epochs={args.clf_epochs}"]
    s, _ = common.run_fastlight(["task=text_clf", "data=imdb_sample", f"task.encoder={lm}", *size_overrides(args),
                                 *quiet, f"model.bptt={args.bptt}", f"optim.lr={args.clf_lr}", *schedule,
                                 f"data.batch_size={args.bs}", *common.timer_overrides("epoch")],
                                prefix="bench_clf_", quiet=True)
    out["step 3 s"] = time.perf_counter() - t
    epochs = common.EpochTimer.epochs
    out["clf s/epoch"] = common.median(e.wall for e in epochs)
    out["accuracy"] = epochs[-1].metrics.get("val/accuracy", float("nan"))
    if s["status"] != "completed":
        raise SystemExit(f"fastlight classifier failed: {s['error']}")
    return out


def fastai_pipeline(args, root, seed: int) -> dict:
    import pandas as pd
    from fastai.text.all import (
        AWD_LSTM,
        TextDataLoaders,
        accuracy,
        awd_lstm_clas_config,
        awd_lstm_lm_config,
        language_model_learner,
        text_classifier_learner,
    )
    from fastai.torch_core import set_seed

    set_seed(seed)  # python, numpy and torch, as fastlight's seed=
    df = pd.read_csv(root / "imdb_sample" / "texts.csv")
    size = {"emb_sz": args.emb, "n_hid": args.hid, "n_layers": args.layers}
    out = {}
    t = time.perf_counter()
    dls_lm = TextDataLoaders.from_df(df, text_col="text", is_lm=True, valid_col="is_valid", bs=64, seq_len=args.bptt)
    out["tokenize s"] = time.perf_counter() - t
    learn = language_model_learner(dls_lm, AWD_LSTM, config={**awd_lstm_lm_config, **size}, pretrained=False,
                                   drop_mult=0.3, path=common.REPO / "outputs" / "bench_fastai_text")
    bf16 = common.fastai_bf16(args)
    if bf16:
        learn.add_cb(common.fastai_cpu_autocast())
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(args.lm_epochs, args.lm_lr)
    learn.save_encoder("bench_enc")
    out["step 2 s"] = time.perf_counter() - t
    out["step 2 ppl"] = math.exp(float(learn.recorder.values[-1][1]))  # [train_loss, valid_loss]
    t = time.perf_counter()
    dls = TextDataLoaders.from_df(df, text_col="text", label_col="label", valid_col="is_valid", bs=args.bs,
                                  seq_len=args.bptt, text_vocab=dls_lm.vocab)
    clf = text_classifier_learner(dls, AWD_LSTM, config={**awd_lstm_clas_config, **size}, pretrained=False,
                                  drop_mult=0.5, metrics=accuracy, seq_len=args.bptt, path=learn.path)
    clf.load_encoder("bench_enc")
    if bf16:
        clf.add_cb(common.fastai_cpu_autocast())
    timer = common.fastai_timer("epoch")
    lr = args.clf_lr
    with clf.no_bar(), clf.no_logging():
        if args.clf_schedule == "unfrozen":
            clf.unfreeze()
            clf.fit_one_cycle(args.clf_epochs, lr, cbs=[timer])
        else:
            ulmfit_stages(clf, lr, timer)
    out["step 3 s"] = time.perf_counter() - t
    out["clf s/epoch"] = common.median(e.wall for e in timer.epochs)
    out["accuracy"] = float(clf.recorder.values[-1][2])
    return out


def ulmfit_stages(clf, lr, timer) -> None:
    """The lesson's gradual unfreezing on a fastai Learner."""
    k = 2.6**4
    clf.freeze()
    clf.fit_one_cycle(1, lr, cbs=[timer])
    clf.freeze_to(-2)
    clf.fit_one_cycle(1, slice(lr / 2 / k, lr / 2), cbs=[timer])
    clf.freeze_to(-3)
    clf.fit_one_cycle(1, slice(lr / 4 / k, lr / 4), cbs=[timer])
    clf.unfreeze()
    clf.fit_one_cycle(2, slice(lr / 20 / k, lr / 20), cbs=[timer])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emb", type=int, default=400)
    parser.add_argument("--hid", type=int, default=1152)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--bptt", type=int, default=72)
    parser.add_argument("--bs", type=int, default=32, help="classifier batch size")
    parser.add_argument("--general", default="ptb", choices=["ptb", "shakespeare", "none"])
    parser.add_argument("--general-epochs", type=int, default=1)
    parser.add_argument("--lm-epochs", type=int, default=1)
    parser.add_argument("--lm-lr", type=float, default=2e-3)
    parser.add_argument("--clf-lr", type=float, default=2e-2)
    parser.add_argument("--clf-schedule", default="ulmfit", choices=["ulmfit", "unfrozen"],
                        help="ulmfit: the lesson's gradual unfreezing; unfrozen: fit_one_cycle(--clf-epochs)")
    parser.add_argument("--clf-epochs", type=int, default=12, help="with --clf-schedule unfrozen")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=1, help="repeat with seeds 0..N-1, the peers interleaved")
    parser.add_argument("--precision", default="32", choices=["32", "bf16"],
                        help="bf16: fastlight's trainer.precision=bf16-mixed (and fastai's, unless --fastai-precision)")
    parser.add_argument("--fastai-precision", choices=["32", "bf16"],
                        help="fastai's (default: --precision; bf16 through a CPU autocast callback, as its "
                             "MixedPrecision is CUDA-only)")
    parser.add_argument("--data", help="data root (default: $FASTLIGHT_DATA or ../shared/data)")
    parser.add_argument("--no-fastai", action="store_true")
    args = parser.parse_args()
    common.prepare_process()
    root = common.data_root(args.data)
    fastai = common.import_fastai("fastai.text.all", not args.no_fastai)
    peers = ["fastlight"] + (["fastai"] if fastai is not None else [])

    def run(peer: str, seed: int) -> dict:
        torch.manual_seed(seed)
        t = time.perf_counter()
        result = fastlight_pipeline(args, root, seed) if peer == "fastlight" else fastai_pipeline(args, root, seed)
        return {**result, "total s": time.perf_counter() - t}

    describe = lambda r: ", ".join(f"{k} {v:.3g}" for k, v in r.items() if v is not None)
    runs = common.interleaved(peers, args.seeds, run, describe, threads=args.threads)
    results = {p: {k: common.median(r.get(k, float("nan")) for r in runs[p]) for k in runs[p][0]} for p in peers}
    keys = ["accuracy", "tokenize s", "clf s/epoch", "step 2 s", "step 3 s", "total s"]
    clf = "the lesson's 5 staged epochs" if args.clf_schedule == "ulmfit" else f"{args.clf_epochs} unfrozen epochs"
    print(f"imdb_sample, AWD-LSTM {args.emb}/{args.hid}/{args.layers}, bptt {args.bptt}, {args.threads} threads, "
          f"precision {args.precision} (fastai {args.fastai_precision or args.precision}); "
          f"step 1: {args.general}; step 2: {args.lm_epochs} ep at {args.lm_lr}; step 3: {clf} at {args.clf_lr}; "
          f"seeds 0-{args.seeds - 1} (medians)")
    print(common.peers_table(peers, [common.Column(k, {p: results[p].get(k, float("nan")) for p in peers},
                                                   {"accuracy": ".3f", "tokenize s": ".2f"}.get(k, ".1f"),
                                                   ("fastai",) if k != "accuracy" else ()) for k in keys]))
    if args.seeds > 2 and len(peers) == 2:
        print(common.seed_report("accuracy", {p: [r["accuracy"] for r in runs[p]] for p in peers}))


if __name__ == "__main__":
    main()
