"""One LightningModule per task and its training recipe, nothing else: `tasks/<task>.py` mirrors
`conf/task/<task>.yaml` (mnist, vision, collab, tabular, and the later lessons' tasks).

A task subclasses `fastlight.tasks.base.Task` (optimizer, one-cycle schedule, the training step)
and implements `training_loss`, `validation_step`, `test_step` and `layer_groups`. Its models are
in `fastlight.models`, its data modules in `fastlight.data`, what a person looks at afterwards in
`fastlight.interpret.<task>`, and the commands on a finished run in `fastlight.cli`.
"""
