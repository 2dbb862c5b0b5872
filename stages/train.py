"""Stage 3, train: fit on the reference window, register the model, write models/.

The work is core/training.py's; this entry point only reads params.yaml (see dvc.yaml's `train`).
"""

from __future__ import annotations

from core.params import load_params
from core.runner import run_stage
from core.training import train


def main() -> None:
    train(load_params())


if __name__ == "__main__":
    run_stage("train", main)
