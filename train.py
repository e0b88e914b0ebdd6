"""Train one fastlight task: python train.py task=mnist model=mlp optim=adam (see README)."""
from fastlight.run import main

if __name__ == "__main__":
    main()
