"""Where the months come from: one :class:`DataSource` per ``data.source``, chosen in one place.

The ingest stage, the loop (``autoops latest-month``, ``check``, ``propose``) and the backtest
all ask :func:`source_for` for the configured source and then ask *it*: for a month's trips
(``chunks``/``materialise``), for the newest month it has published (``latest``), for what decides
a month's content (``identity``, the backtest's cache key), and how to name it in messages. None
of them knows which sources exist.

Built in: ``synthetic`` (core/sources/synthetic.py, the offline default), ``tlc`` (TLC's site,
core/sources/tlc.py) and ``dir`` (TLC's files in a local folder, core/sources/dir.py).

How a new data source plugs in
------------------------------
Write one module here, e.g. ``core/sources/warehouse.py``, with a subclass of
:class:`~core.sources.base.DataSource` (or of :class:`~core.sources.files.FileSource` when each
month is one TLC-style parquet file: then only ``path`` and ``latest`` are left to write). It
sets ``name`` (the ``data.source`` value) and implements ``chunks`` (the month's rows as
published, in any TLC schema era: the canonical schema is applied for every source by
``materialise``), ``identity`` and ``latest``; ``months``, ``check_published``, ``describe``,
``settings`` and ``shift_month`` have defaults a source overrides only if it knows better. Then
add one line to :data:`SOURCES` below. Its own settings go in ``data`` (core/params.py) if it has
any; nothing else changes: ``data.source: warehouse`` in params.yaml selects it, and
tests/test_sources.py shows a source registered from a test driving the ingest stage.
"""

from __future__ import annotations

from pathlib import Path

from core.params import Params, ParamsError
from core.sources.base import DataSource, UnpublishedError
from core.sources.dir import DirSource
from core.sources.synthetic import SyntheticSource
from core.sources.tlc import TlcSource

__all__ = ["SOURCES", "DataSource", "UnpublishedError", "source_for"]

#: Every source, by the ``data.source`` value that selects it.
SOURCES: dict[str, type[DataSource]] = {
    SyntheticSource.name: SyntheticSource,
    TlcSource.name: TlcSource,
    DirSource.name: DirSource,
}


def source_for(params: Params, root: Path = Path(".")) -> DataSource:
    """The source ``params.data.source`` names; ``root`` is where a relative ``data.dir`` starts."""
    name = params.data.source
    try:
        source = SOURCES[name]
    except KeyError:
        known = ", ".join(sorted(SOURCES))
        raise ParamsError(f"data.source: unknown source {name!r} (known: {known})") from None
    return source(params, root)
