"""Keeping track of runs: W&B setup (`wandb`), the local run record in each run's folder (`record`),
sweep bookkeeping (`sweep`), the console's output (`console`) and the comparison report (`report`).
What a person looks at after training is in `fastlight.interpret`, not here.
"""
