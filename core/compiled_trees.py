"""Predictors for a trained model: the trees compiled to native code, or sklearn.

Why compile: sklearn's HistGradientBoosting makes one OpenMP call per tree, so a single trip costs
~3 ms whatever the hardware; treelite + tl2cgen turn the same trees into C if/else code that
predicts one trip in microseconds (core/tree_codegen.py adds the batch entry point). Compiling
takes tens of seconds for a 300-tree model, so it happens once per model version (at image build,
``python -m serve.compile``, in the service's background the first time a version is served, or
by the pipeline's scoring of a big month, core/scoring.py) and the library is cached under
``<cache>/<model sha256>/``. Without a C compiler the callers use sklearn, with a warning.

Why here and not in serve/: the pipeline's stages score months with the same libraries, and a
stage must not import the service (tests/test_dvc_deps.py); serve/predictor.py re-exports it all.

A compiled library is only ever used after a parity check against sklearn on probe rows that
cover every category code and missing values (tolerance :data:`PARITY_TOLERANCE` minutes).

Size (~430 lines): one concern, the compiled library's whole life (compile, cache layout and lock,
load, parity); split, the cache's file format and its locking would be spread over two modules.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.features import FEATURES, INPUT_COLUMNS, ZONE_ID_RANGE, feature_matrix
from core.host import usable_cpus
from core.tree_codegen import (
    CODEGEN_VERSION,
    COMPILER_OPTIONS,
    COMPILER_PARAMS,
    TREES_PER_UNIT,
    UNITS_PER_SOURCE,
    export_library,
)

COMPILED_LIB = "predictor.so"
COMPILED_META = "compiled.json"
# Minutes; the compiled trees give scikit-learn's doubles (the same sum in the same order, codegen 2), so
# anything above this is a real bug.
PARITY_TOLERANCE = 1e-6
# Requests up to this many rows are prepared in plain Python (CompiledPredictor._predict_rows).
DIRECT_ROWS = 16
# Batches from this size on are predicted grouped by category (CompiledPredictor._predict_batch).
SORT_ROWS = 64
# Raw category codes the compiled predictor can encode (zones: MAX_ZONE_CODES = 254 + "other").
_CATEGORY_CODES = 256
# Within a pair of zones a big batch is ordered by the numeric features the trees split on most (the
# default model: the zones 51% of its splits, trip_distance 21%, pickup_hour 16%), so a group's
# distance splits go one way, then the other, instead of at random: (column, steps per unit, bits).
# 2 zone digits (17 bits) + 24 + 12 stay below int64's 63: distances to 167,000 miles, any hour.
_SORT_NUMERIC = ((FEATURES.index("trip_distance"), 100.0, 24), (FEATURES.index("pickup_hour"), 128.0, 12))

# A library only loads where it was built for (the release builds it on x86_64 Linux, like the image).
PLATFORM = f"{sys.platform}-{platform.machine()}"

log = logging.getLogger(__name__)


class Predictor(Protocol):
    """What the service calls: features (rows x :data:`FEATURES`) -> durations in minutes."""

    kind: str

    def predict(self, features: np.ndarray) -> np.ndarray: ...

    def predict_row(self, row: list[float]) -> float: ...


class SklearnPredictor:
    """The trained estimator itself: always correct, slow for single rows."""

    kind = "sklearn"

    def __init__(self, estimator: Any) -> None:
        # Here, not at the top: core.model imports scikit-learn (1.5-1.8 s, `python -X importtime`),
        # which a service whose trees are compiled never needs at start-up.
        from core.model import predict

        self._predict = predict
        self.estimator = estimator

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self._predict(self.estimator, features)

    def predict_row(self, row: list[float]) -> float:
        return float(self.predict(np.array([row], dtype=np.float64))[0])


class CompiledPredictor:
    """A library compiled from the estimator's trees (see :func:`compile_model`)."""

    kind = "compiled"

    def __init__(self, lib_dir: Path) -> None:
        self.lib_dir = lib_dir
        self.meta: dict[str, Any] = json.loads((lib_dir / COMPILED_META).read_text())
        if self.meta["n_features"] != len(FEATURES):
            raise ValueError(
                f"{lib_dir}: compiled for {self.meta['n_features']} features, not {len(FEATURES)}"
            )
        # ctypes on the library's own entry point rather than tl2cgen's runtime: no DMatrix or
        # thread pool to set up per call (uvicorn workers scale across cores), and the function is
        # reentrant (its only state is the rows and results it is handed), so no lock either.
        self._lib = ctypes.CDLL(str(lib_dir / COMPILED_LIB))
        if self._lib.get_num_feature() != len(FEATURES):
            raise ValueError(f"{lib_dir}: the library takes {self._lib.get_num_feature()} features")
        try:
            self._predict_c = self._lib.predict_batch
        except AttributeError:
            raise ValueError(f"{lib_dir}: built without predict_batch (an older Auto-Ops)") from None
        self._predict_c.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)
        self._predict_c.restype = None
        categories = {int(col): codes for col, codes in self.meta["categories"].items()}
        self._cat_cols = np.array(sorted(categories), dtype=np.intp)
        self._rows = np.arange(len(self._cat_cols))
        self._known = np.zeros((len(self._cat_cols), _CATEGORY_CODES), dtype=bool)
        for row, col in enumerate(self._cat_cols):
            self._known[row, categories[int(col)]] = True
        self._known_sets = [(int(col), frozenset(categories[int(col)])) for col in self._cat_cols]
        self._known_flat = self._known.ravel()
        self._offsets = self._rows * _CATEGORY_CODES
        # The sort key's digits (positions in self._cat_cols), the column with the most categories
        # the most significant.
        by_size = sorted(self._rows, key=lambda row: len(categories[int(self._cat_cols[row])]), reverse=True)
        self._sort_keys = np.array(by_size, dtype=np.intp)

    def _categories(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The categorical columns as the trees must see them, and where that differs from
        ``features``: sklearn's HistGradientBoosting encodes a category it never saw in training as
        missing; the exported trees would send it down the 'not in the left set' branch instead."""
        cats = features[:, self._cat_cols]
        codes = np.where((cats >= 0) & (cats < _CATEGORY_CODES), cats, -1).astype(np.intp)
        # One flat lookup (row r's code c at r * 256 + c): 2-D fancy indexing cost ~3x as much.
        seen = np.take(self._known_flat, codes.clip(0) + self._offsets) & (codes == cats)
        unseen = ~seen & ~np.isnan(cats)
        cats[unseen] = np.nan
        return cats, unseen.any(axis=1)

    def _unseen_to_missing(self, features: np.ndarray) -> np.ndarray:
        if not len(self._cat_cols):
            return features
        cats, changed = self._categories(features)
        if not changed.any():
            return features
        out = features.copy()
        out[:, self._cat_cols] = cats
        return out

    def _predict_batch(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, np.float64)
        # The trees are branchy code: rows that take the same paths one after another keep the
        # branch predictor right. Grouping the batch by its categorical columns (the zones) cuts
        # ~25% off a 1000-trip batch of random real trips; each row's prediction is unchanged.
        if len(features) < SORT_ROWS or not len(self._sort_keys):
            return self._run(self._unseen_to_missing(features))
        cats, changed = self._categories(features)
        order = np.argsort(self._group_key(cats, features))
        # The reordered copy is the library's input; only its few rows with an unseen category are
        # rewritten (a corrected copy of the whole batch first cost as much as a tenth of the trees).
        # np.take, not features[order]: a frame's columns arrive as a Fortran-ordered matrix, which
        # fancy indexing gathers ~3x slower into the C-ordered rows the library reads.
        rows = np.take(features, order, axis=0)
        fix = np.flatnonzero(changed[order])
        if len(fix):
            rows[fix[:, None], self._cat_cols] = cats[order[fix]]
        out = np.empty(len(features))
        out[order] = self._run(rows, owned=True)
        return out

    def _group_key(self, cats: np.ndarray, features: np.ndarray) -> np.ndarray:
        """One int64 per row whose order groups the rows by their two biggest category columns
        (``cats``, from :meth:`_categories`: known codes below 256, or missing; the zones, which
        decide the others), then orders each group by :data:`_SORT_NUMERIC`: one integer sort
        instead of np.lexsort over float columns (a third of its time)."""
        key = np.zeros(len(cats), dtype=np.int64)
        for col in self._sort_keys[:2]:
            codes = np.nan_to_num(cats[:, col], nan=-1.0).astype(np.int64) + 1
            key = key * (_CATEGORY_CODES + 1) + codes
        for col, scale, bits in _SORT_NUMERIC:
            steps = np.clip(np.nan_to_num(features[:, col], nan=-1.0) * scale + 1, 0, (1 << bits) - 1)
            key = (key << bits) + steps.astype(np.int64)
        return key

    def _predict_rows(self, features: np.ndarray) -> np.ndarray:
        """A few rows: the same library call, prepared in plain Python (numpy's per-call cost
        would be most of a single trip's time)."""
        rows = features.tolist()
        for row in rows:
            for col, known in self._known_sets:
                value = row[col]
                if value == value and value not in known:
                    row[col] = math.nan
        return self._run(np.array(rows, dtype=np.float64).reshape(len(rows), len(FEATURES)))

    def _run(self, features: np.ndarray, *, owned: bool = False) -> np.ndarray:
        """``predict_batch(union Entry* rows, int n, double* out)`` on a copy of ``features`` (the
        library quantizes its input in place), or on ``features`` itself when the caller ``owned``
        a fresh array (a batch reordered by fancy indexing is one already)."""
        n = features.shape[0]
        entries = np.array(features, dtype=np.float64, order="C", copy=None if owned else True)
        missing = np.isnan(entries)
        if missing.any():
            # union Entry {int missing; double fvalue; int qvalue;}: the int at offset 0 is -1 for missing.
            entries.view(np.int32).reshape(n, len(FEATURES), 2)[..., 0][missing] = -1
        out = np.empty(n)
        self._predict_c(entries.ctypes.data, n, out.ctypes.data)
        return out

    def predict_row(self, row: list[float]) -> float:
        """One row (a list in :data:`FEATURES` order) without NumPy: the library's input written
        as :meth:`_run` writes it, into a buffer of the stdlib's ``array`` (a NumPy array's set-up
        costs more than the trees of one trip)."""
        entries = array("d", row)
        flags = memoryview(entries).cast("B").cast("i")  # union Entry's int at offset 0
        for col, value in enumerate(row):
            if value != value:
                flags[2 * col] = -1
        for col, known in self._known_sets:
            value = row[col]
            if value == value and value not in known:
                flags[2 * col] = -1  # unseen category: missing, as sklearn encodes it
        out = array("d", (0.0,))
        self._predict_c(entries.buffer_info()[0], 1, out.buffer_info()[0])
        return out[0]

    def predict(self, features: np.ndarray) -> np.ndarray:
        if features.shape[0] <= DIRECT_ROWS:
            return self._predict_rows(features)
        return self._predict_batch(features)


def known_categories(estimator: Any) -> dict[int, list[int]]:
    """Raw category codes seen in training, per categorical column (HistGradientBoosting only).

    scikit-learn >= 1.4 ordinal-encodes categorical columns with a private preprocessor whose
    ``categories_`` are the raw values; treelite maps its splits back to those raw values. The
    parity check in :func:`compile_model` catches any release where this stops being true.
    """
    preprocessor = getattr(estimator, "_preprocessor", None)
    if preprocessor is None:
        return {}
    cat_cols = [int(c) for c in np.flatnonzero(estimator.is_categorical_)]
    categories: dict[int, list[int]] = {}
    for col, values in zip(cat_cols, preprocessor.named_transformers_["encoder"].categories_, strict=True):
        known = [float(v) for v in values if not np.isnan(v)]
        if any(v != int(v) or not 0 <= v < _CATEGORY_CODES for v in known):
            raise ValueError(
                f"column {FEATURES[col]}: categories must be integer codes 0-{_CATEGORY_CODES - 1}"
            )
        categories[col] = [int(v) for v in known]
    return categories


def probe_features(rows: int = 2000, seed: int = 0) -> np.ndarray:
    """Rows to compare predictors on: every zone as pickup and as dropoff (seen in training or
    not, plus out-of-range codes), all hours and weekdays, unknown optional fields, random trips.

    Built through :func:`core.features.feature_matrix` from raw trips, like real requests.
    """
    rng = np.random.default_rng(seed)
    zones = np.arange(ZONE_ID_RANGE[0] - 1, ZONE_ID_RANGE[1] + 2)
    n = max(rows, 2 * len(zones))
    pu = rng.integers(ZONE_ID_RANGE[0], ZONE_ID_RANGE[1] + 1, n)
    do = rng.integers(ZONE_ID_RANGE[0], ZONE_ID_RANGE[1] + 1, n)
    pu[: len(zones)] = zones
    do[len(zones) : 2 * len(zones)] = zones
    start = np.datetime64("2021-01-01T00:00", "us")
    pickup = start + rng.integers(0, 366 * 86_400_000_000, n).astype("timedelta64[us]")

    def maybe_missing(values: np.ndarray) -> np.ndarray:
        values = values.astype(np.float64)
        values[rng.random(n) < 0.3] = np.nan
        return values

    columns = {
        "lpep_pickup_datetime": pickup,
        "PULocationID": pu,
        "DOLocationID": do,
        "trip_distance": np.round(rng.lognormal(0.8, 0.9, n).clip(0.01, 100), 2),
        "VendorID": maybe_missing(rng.choice([1, 2, 6], n)),
        "RatecodeID": maybe_missing(rng.choice([1, 2, 3, 4, 5, 6, 99], n)),
        "trip_type": maybe_missing(rng.choice([1, 2], n)),
        "passenger_count": maybe_missing(rng.integers(0, 10, n)),
    }
    assert set(columns) == set(INPUT_COLUMNS)
    return feature_matrix(columns)


def max_abs_diff(a: Predictor, b: Predictor, features: np.ndarray) -> float:
    return float(np.max(np.abs(a.predict(features) - b.predict(features)), initial=0.0))


def find_compiler() -> str | None:
    """A C toolchain tl2cgen knows how to drive: ``$CC`` when set (a gcc or clang variant, as for
    make), else gcc or clang by name. ``$CC`` naming no program means no compiler, not another one."""
    if cc := os.environ.get("CC", "").strip():
        return cc if shutil.which(cc.split()[0]) else None
    return next((cc for cc in ("gcc", "clang") if shutil.which(cc)), None)


def load_compiled(cache_dir: Path, model_sha256: str) -> CompiledPredictor | None:
    """The cached library for this model version, or None when there is none (or it is unusable)."""
    lib_dir = cache_dir / model_sha256
    if not (lib_dir / COMPILED_META).exists():
        return None
    try:
        meta = json.loads((lib_dir / COMPILED_META).read_text())
        if meta.get("model_sha256") != model_sha256:
            raise ValueError(f"built for model {str(meta.get('model_sha256'))[:12]}")
        if meta.get("platform", PLATFORM) != PLATFORM:
            raise ValueError(f"built for {meta['platform']}, this is {PLATFORM}")
        if meta.get("codegen") != CODEGEN_VERSION:
            raise ValueError(f"built by code generator {meta.get('codegen')}, this is {CODEGEN_VERSION}")
        return CompiledPredictor(lib_dir)
    except Exception as exc:  # a library from another platform or tl2cgen version: recompile
        log.warning("ignoring compiled model %s: %s", lib_dir, exc)
        return None


def install_compiled(lib_dir: Path, cache_dir: Path, model_sha256: str) -> CompiledPredictor | None:
    """Copy a library built elsewhere (the release ships one with the model) into the cache and
    load it; None if it is not one for this model and platform. The copy lands atomically, so a
    concurrent worker sees the whole library or none."""
    if (cached := load_compiled(cache_dir, model_sha256)) is not None:
        return cached
    try:
        meta = json.loads((lib_dir / COMPILED_META).read_text())
    except (OSError, ValueError):
        return None
    if meta.get("model_sha256") != model_sha256 or meta.get("platform") != PLATFORM:
        log.warning(
            "ignoring %s: built for model %s on %s", lib_dir, meta.get("model_sha256"), meta.get("platform")
        )
        return None
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_sha256[:12]}.", suffix=".tmp", dir=cache_dir))
    try:
        for name in (COMPILED_LIB, COMPILED_META):
            shutil.copyfile(lib_dir / name, tmp / name)
        os.chmod(tmp, 0o755)
        with contextlib.suppress(OSError):  # another worker installed it first: same bytes
            os.replace(tmp, cache_dir / model_sha256)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_compiled(cache_dir, model_sha256)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``, which is removed again on release.

    Every uvicorn worker may want the same model compiled; one compiles, the others wait for it.
    The holder deletes the file before unlocking, so a waiter that then gets the lock on the
    deleted file notices (its inode is no longer the path's) and locks the new file instead:
    no lock files pile up in the cache, and two holders can never coexist.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
        except BaseException:
            os.close(fd)
            raise
        if current:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def lock_path(cache_dir: Path, model_sha256: str) -> Path:
    return cache_dir / f".{model_sha256}.lock"


def remove_abandoned_lock(cache_dir: Path, model_sha256: str) -> None:
    """Delete the lock a killed compiler left behind, unless a live one still holds it."""
    path = lock_path(cache_dir, model_sha256)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            os.unlink(path)
    os.close(fd)


def _parity_diff(compiled: CompiledPredictor, reference: SklearnPredictor, probe: np.ndarray) -> float:
    """Largest difference from scikit-learn, through both ways predict() prepares the rows for the
    library: a batch (grouped by zone, numpy) and a few rows (plain Python)."""
    small = probe[: 50 * DIRECT_ROWS]
    by_rows = np.concatenate(
        [compiled.predict(small[i : i + DIRECT_ROWS]) for i in range(0, len(small), DIRECT_ROWS)]
    )
    return max(
        max_abs_diff(compiled, reference, probe),
        float(np.max(np.abs(by_rows - reference.predict(small)), initial=0.0)),
    )


def compile_model(
    estimator: Any,
    model_sha256: str,
    cache_dir: Path,
    *,
    parity_features: np.ndarray | None = None,
    nthread: int | None = None,
    work_dir: Path | None = None,
) -> CompiledPredictor | None:
    """Compile ``estimator`` once (cached by its sha256) and return it, or None (use sklearn).

    ``work_dir`` (on the cache's file system) holds the unfinished library instead of the cache
    itself, so whoever owns that folder can remove every trace of an interrupted compile.
    """
    if cached := load_compiled(cache_dir, model_sha256):
        return cached
    compiler = find_compiler()
    if compiler is None:
        log.warning(
            "no C compiler (gcc or clang, or $CC) found: using the sklearn estimator, which is slower"
        )
        return None
    try:
        import tl2cgen
        import treelite
    except ImportError as exc:
        log.warning("treelite/tl2cgen unavailable (%s): using the sklearn estimator", exc)
        return None
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(lock_path(cache_dir, model_sha256)):
        if cached := load_compiled(cache_dir, model_sha256):
            return cached
        tmp = Path(
            tempfile.mkdtemp(prefix=f".{model_sha256[:12]}.", suffix=".tmp", dir=work_dir or cache_dir)
        )
        try:
            started = time.perf_counter()
            tl_model = treelite.sklearn.import_model(estimator)
            export_library(tl_model, tmp / COMPILED_LIB, compiler, nthread or usable_cpus())
            meta: dict[str, Any] = {
                "model_sha256": model_sha256,
                "n_features": len(FEATURES),
                "num_tree": tl_model.num_tree,
                "categories": {str(k): v for k, v in known_categories(estimator).items()},
                "platform": PLATFORM,
                "compiler": compiler,
                "compiler_options": list(COMPILER_OPTIONS),
                "compiler_params": COMPILER_PARAMS,
                "trees_per_unit": TREES_PER_UNIT,
                "units_per_source": UNITS_PER_SOURCE,
                "codegen": CODEGEN_VERSION,
                "treelite_version": treelite.__version__,
                "tl2cgen_version": tl2cgen.__version__,
                "compile_seconds": round(time.perf_counter() - started, 1),
            }
            _write_meta(tmp, meta)
            probe = probe_features() if parity_features is None else parity_features
            diff = _parity_diff(CompiledPredictor(tmp), SklearnPredictor(estimator), probe)
            if not diff <= PARITY_TOLERANCE:
                log.warning(
                    "compiled model %s differs from sklearn by %.3g min (> %g): using sklearn",
                    model_sha256[:12],
                    diff,
                    PARITY_TOLERANCE,
                )
                return None
            _write_meta(tmp, {**meta, "parity_max_abs_diff": diff, "parity_rows": len(probe)})
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the image's service user must read it
            # A library load_compiled refused above (another platform, an older build) gives way.
            shutil.rmtree(cache_dir / model_sha256, ignore_errors=True)
            os.replace(tmp, cache_dir / model_sha256)
            log.info("compiled model %s in %.1f s", model_sha256[:12], meta["compile_seconds"])
        except Exception as exc:
            log.warning("compiling model %s failed (%s): using the sklearn estimator", model_sha256[:12], exc)
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return load_compiled(cache_dir, model_sha256)


def _write_meta(lib_dir: Path, meta: Mapping[str, Any]) -> None:
    (lib_dir / COMPILED_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
