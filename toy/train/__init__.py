"""Training the embedded toy MOVA from nothing (see scripts/train_toy.py and docs/toy-model.md)."""
