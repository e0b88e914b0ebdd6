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
