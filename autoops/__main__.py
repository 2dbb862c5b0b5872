"""``python -m autoops``: the ``autoops`` console script without the installed script."""

from __future__ import annotations

from autoops.cli import main

if __name__ == "__main__":
    main()
