"""Lesson 5's two MNIST models, on flattened 28x28 digits (784 inputs, 10 classes).

- `Logistic`: fastbook's Mnist_Logistic, one Linear layer (the softmax is inside the loss).
- `MLP`: fastbook's Mnist_NN, Linear -> ReLU for each hidden size, then Linear to the classes
  (784-50-10 by default, as the lesson).
"""

from __future__ import annotations

from torch import nn


class Logistic(nn.Sequential):
    """Mnist_Logistic: one Linear layer, softmax inside the loss."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__(nn.Linear(n_in, n_out))


class MLP(nn.Sequential):
    """Mnist_NN: Linear -> ReLU for each hidden size, then Linear to the classes."""

    def __init__(self, n_in: int, n_out: int, hidden: list[int] = (50,)):
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(n_in, h), nn.ReLU()]
            n_in = h
        super().__init__(*layers, nn.Linear(n_in, n_out))
