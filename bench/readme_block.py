"""One place that swaps a generated block into a doc, for every benchmark that renders one.

Each benchmark owns its markers (``<!-- name:begin (command) -->`` ... ``<!-- name:end -->``) and
the block's text; the swap itself, and the error when a doc lost its markers, are the same for all.
"""

from __future__ import annotations

from pathlib import Path


def fill_block(doc: Path, begin: str, end: str, block: str) -> str:
    """``doc``'s text with everything from ``begin`` through ``end`` replaced by ``block``
    (which carries both markers itself)."""
    text = doc.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{doc}: no {begin} ... {end} block to fill")
    head, rest = text.split(begin, 1)
    return head + block + rest.split(end, 1)[1]
