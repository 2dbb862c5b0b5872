"""``python -m serve``: the service (serve/start.py, which ``autoops serve`` runs too)."""

from __future__ import annotations

import typer

from serve.start import run

if __name__ == "__main__":
    typer.run(run)
