"""What a person looks at after (or during) training, one module per task.

`media` is the one helper that writes figures, images and tables to the run folder and, when the
run logs to W&B, to W&B as well; every task's interpretation goes through it.
"""
