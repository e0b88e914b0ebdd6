"""The training loop's shared parts: layer groups and discriminative learning rates (`layer_groups`),
freezing and staged training (`finetune`), one-cycle and other schedules (`schedules`), the lesson's
hand-written optimizers (`optimizers`), checkpoint checks (`checkpoints`) and the in-memory fast path.
"""
