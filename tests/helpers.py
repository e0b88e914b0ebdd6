"""Test-only Lightning callbacks, added to a run from the command line (+callbacks.x._target_=...)."""

import lightning as L


class StopAfter(L.Callback):
    """Stop training cleanly after `epochs` epochs, as if the job had been cut short."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class BlowUpAt(L.Callback):
    """From epoch `epoch` on, set an absurd learning rate so the loss diverges."""

    def __init__(self, epoch: int, lr: float = 1e30):
        self.epoch, self.lr = epoch, lr

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch >= self.epoch:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = self.lr


class InterruptAt(L.Callback):
    """Raise KeyboardInterrupt (what Ctrl-C does) before optimizer step `step` (a per-step hook:
    it fires on the fast path's steps inside a chunk too)."""

    def __init__(self, step: int):
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt


class CountHooks(L.Callback):
    """Counts Lightning's per-step hooks and validation runs; writes them to <run>/hook_counts.json
    when the fit ends (so a test can read them after a run, in this process or another)."""

    def __init__(self):
        self.counts = {"on_before_backward": 0, "on_after_backward": 0, "on_before_optimizer_step": 0,
                       "validations": 0, "train_batches": 0}

    def on_before_backward(self, trainer, pl_module, loss):
        self.counts["on_before_backward"] += 1

    def on_after_backward(self, trainer, pl_module):
        self.counts["on_after_backward"] += 1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.counts["on_before_optimizer_step"] += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.counts["train_batches"] += 1

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.counts["validations"] += 1

    def on_fit_end(self, trainer, pl_module):
        import json
        from pathlib import Path

        counts = {**self.counts, "global_step": trainer.global_step, "rank": trainer.global_rank,
                  "world_size": trainer.world_size,
                  "fused": bool(trainer.optimizers and trainer.optimizers[0].defaults.get("fused"))}
        name = "hook_counts.json" if trainer.global_rank == 0 else f"hook_counts.rank{trainer.global_rank}.json"
        (Path(trainer.default_root_dir) / name).write_text(json.dumps(counts))


class SaveAtStep(L.Callback):
    """Save <run>/checkpoints/mid.ckpt after optimizer step `step` (mid-epoch), then stop the run."""

    def __init__(self, step: int, stop: bool = True):
        self.step, self.stop = step, stop

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        from pathlib import Path

        if trainer.global_step >= self.step and not getattr(self, "done", False):
            self.done = True
            trainer.save_checkpoint(Path(trainer.default_root_dir) / "checkpoints" / "mid.ckpt")
            if self.stop:
                trainer.should_stop = True
