"""What a person looks at after training, one module per task: `collab` (biases, PCA of the movie
factors, recommendations), `tabular` (permutation importance, embedding PCA, predictions on new rows),
`vision` (top losses, confusion matrix, most confused, predictions and the loss ranking that
`fastlight clean` reviews), and the later tasks' own.

`media` is the one helper that writes figures, images and tables to the run folder and, when the
run logs to W&B, to W&B as well; every task's interpretation goes through it.
"""
