"""The ``tlc`` source: NYC TLC's monthly Green Taxi files, downloaded from TLC's site into a local cache.

The TLC site is a CloudFront bucket: a month that is not published yet answers 403 (S3 hides
missing keys behind AccessDenied) or 404, and big files occasionally stall or arrive cut short.
So every download is retried with backoff (tenacity; a server's Retry-After is obeyed), verified
(length and parquet footer) and only then moved into the cache: a file in the cache is always a
complete one, and a cache hit needs no network at all.
"""

from __future__ import annotations

import email.utils
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, TypeVar

import pyarrow.parquet as pq
import requests
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type, stop_after_attempt
from tqdm import tqdm

from core.io import StageError, atomic_path
from core.months import add_months
from core.params import DataParams
from core.sources.base import UnpublishedError
from core.sources.files import FILE_PATTERN, FileSource, validated_month

log = logging.getLogger(__name__)

# Backoff between attempts: BACKOFF_BASE_S * 2**(attempt-1), capped. Module-level so tests (and an
# impatient user) can shrink it; the defaults give 1+2+4+8 = 15 s over the default 4 retries.
BACKOFF_BASE_S: float = 1.0
BACKOFF_MAX_S: float = 30.0
# A server's Retry-After is obeyed up to this much; beyond it we would rather fail with a clear
# message than sit silently for minutes.
RETRY_AFTER_MAX_S: float = 60.0
# A connect that takes longer than this is a dead route, even when reads may legitimately be slow.
CONNECT_TIMEOUT_MAX_S: float = 30.0
# Small enough that an interrupted download reports roughly how far it got, and the bar moves.
CHUNK_BYTES = 1 << 16
USER_AGENT = "auto-ops/0.1 (NYC green taxi duration pipeline)"
# How far back `latest-month` probes TLC: it publishes with a lag of about two months, so a year
# without a new file means something other than lag is wrong.
LOOKBACK_MONTHS = 12

_PARQUET_MAGIC = b"PAR1"
# 429 and 5xx are the server asking us to come back; 408/425 are the same idea from proxies.
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_NOT_PUBLISHED_STATUS = frozenset({403, 404})
# How a failed name lookup shows up in urllib3's message on Linux, macOS and Windows.
_DNS_MARKERS = (
    "NameResolutionError",
    "Name or service not known",
    "getaddrinfo",
    "nodename nor servname",
    "Temporary failure in name resolution",
)

ALTERNATIVES = (
    "to work without the TLC site set data.source: dir (with data.dir pointing at local "
    "green_tripdata_YYYY-MM.parquet files) or data.source: synthetic (the offline default)"
)

T = TypeVar("T")


class _Transient(Exception):
    """A failure worth another attempt; ``reason`` ends up in the final error message."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def tlc_url(month: str, params: DataParams) -> str:
    return params.tlc_url.format(month=month)


def cache_path(month: str, params: DataParams) -> Path:
    return Path(params.cache_dir) / FILE_PATTERN.format(month=month)


def fetch_month(month: str, params: DataParams, *, progress: bool = True) -> Path:
    """Path of the cached raw TLC file for ``month``, downloading it first if it is not cached."""
    month = validated_month(month)
    dest = cache_path(month, params)
    # Only verified files are ever renamed into the cache, so existence is proof enough.
    if dest.is_file():
        return dest
    url = tlc_url(month, params)
    with requests.Session() as session:
        session.headers["User-Agent"] = USER_AGENT
        _with_retries(
            lambda: _download_once(session, url, month, dest, params, progress),
            url=url,
            params=params,
            what="download",
        )
    return dest


def probe_month(month: str, params: DataParams) -> bool:
    """Cheap HEAD: has TLC published ``month``? Network trouble raises instead of answering False,
    so a caller walking back month by month never mistakes an outage for "not published"."""
    month = validated_month(month)
    url = tlc_url(month, params)

    def attempt() -> bool:
        try:
            resp = requests.head(
                url, timeout=_timeouts(params), allow_redirects=True, headers={"User-Agent": USER_AGENT}
            )
        except requests.RequestException as exc:
            raise _Transient(_describe(exc, params)) from exc
        if resp.status_code == 200:
            return True
        if resp.status_code in _NOT_PUBLISHED_STATUS:
            return False
        _raise_for_status(resp, month, url)

    return _with_retries(attempt, url=url, params=params, what="check")


class TlcSource(FileSource):
    """Months from TLC's site: a month is published when TLC serves its file."""

    name = "tlc"

    def path(self, month: str) -> Path:
        return fetch_month(month, self.params.data)

    def latest(self, this_month: str) -> str:
        for back in range(LOOKBACK_MONTHS + 1):
            month = add_months(this_month, -back)
            if probe_month(month, self.params.data):
                return month
        raise UnpublishedError(
            f"TLC has published no month in the {LOOKBACK_MONTHS} months before {this_month}"
        )

    def check_published(self, month: str, this_month: str) -> None:
        # One HEAD request for the month itself: TLC's newest file is the authority, not the calendar.
        if not probe_month(month, self.params.data):
            raise UnpublishedError(
                f"{month} is not published yet: TLC has no file for it (newest: see `autoops latest-month`)"
            )


# --- internals -------------------------------------------------------------------------------


def _timeouts(params: DataParams) -> tuple[float, float]:
    return (min(params.timeout_s, CONNECT_TIMEOUT_MAX_S), params.timeout_s)


def _backoff(state: RetryCallState) -> float:
    """Exponential backoff, stretched to a server's Retry-After (up to RETRY_AFTER_MAX_S)."""
    delay = min(BACKOFF_BASE_S * 2 ** (state.attempt_number - 1), BACKOFF_MAX_S)
    retry_after = getattr(state.outcome.exception() if state.outcome else None, "retry_after", None)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_MAX_S))
    return delay


def _with_retries(attempt: Callable[[], T], *, url: str, params: DataParams, what: str) -> T:
    attempts = params.retries + 1

    def log_retry(state: RetryCallState) -> None:
        reason = state.outcome.exception().reason if state.outcome else "unknown error"
        number, delay = state.attempt_number + 1, state.upcoming_sleep
        log.warning(
            "%s of %s failed (%s); attempt %d/%d in %.1fs", what, url, reason, number, attempts, delay
        )

    retrying = Retrying(
        retry=retry_if_exception_type(_Transient),
        stop=stop_after_attempt(attempts),
        wait=_backoff,
        before_sleep=log_retry,
        # Looked up at call time, so a test can record the sleeps instead of waiting.
        sleep=lambda seconds: time.sleep(seconds),
    )
    try:
        return retrying(attempt)
    except RetryError as exc:
        reason = exc.last_attempt.exception().reason
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    raise StageError(f"cannot {what} {url}: {reason} (gave up after {tries}); {ALTERNATIVES}")


def _download_once(
    session: requests.Session, url: str, month: str, dest: Path, params: DataParams, progress: bool
) -> None:
    try:
        # identity: Content-Length must count the bytes we write, not a compressed transfer.
        resp = session.get(
            url, stream=True, timeout=_timeouts(params), headers={"Accept-Encoding": "identity"}
        )
    except requests.RequestException as exc:
        raise _Transient(_describe(exc, params)) from exc
    with resp:
        if resp.status_code != 200:
            _raise_for_status(resp, month, url)
        expected = _content_length(resp)
        try:
            # atomic_path removes the temp file on any exception, so nothing partial stays behind.
            with atomic_path(dest) as tmp:
                received = _stream_to(resp, tmp, expected, month, params, progress)
                if expected is not None and received != expected:
                    raise _Transient(f"download truncated: got {received} of {expected} bytes")
                _verify_parquet(tmp, url, received)
        except OSError as exc:
            raise StageError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    _fsync_dir(dest.parent)


def _stream_to(
    resp: requests.Response, tmp: Path, expected: int | None, month: str, params: DataParams, progress: bool
) -> int:
    received = 0
    show = progress and sys.stderr.isatty()
    with (
        open(tmp, "wb") as handle,
        tqdm(
            total=expected,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            desc=f"TLC green {month}",
            disable=not show,
            leave=False,
        ) as bar,
    ):
        try:
            for chunk in resp.iter_content(chunk_size=CHUNK_BYTES):
                handle.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except requests.RequestException as exc:
            of = f"{expected}" if expected is not None else "?"
            raise _Transient(f"{_describe(exc, params)} after {received} of {of} bytes") from exc
        handle.flush()
        # The rename must not outrun the data: after a crash the cache holds the old state or
        # the complete file, never a renamed but empty one.
        os.fsync(handle.fileno())
    return received


def _raise_for_status(resp: requests.Response, month: str, url: str) -> NoReturn:
    code = resp.status_code
    if code in _NOT_PUBLISHED_STATUS:
        raise StageError(
            f"TLC has not published {month} yet (HTTP {code} from {url}); "
            f"run `autoops latest-month` to find the newest published month, or {ALTERNATIVES}"
        )
    status = f"HTTP {code} {resp.reason}" if resp.reason else f"HTTP {code}"
    if code in _RETRYABLE_STATUS:
        raise _Transient(status, _retry_after(resp))
    raise StageError(f"{status} from {url}")


def _content_length(resp: requests.Response) -> int | None:
    value = resp.headers.get("Content-Length")
    try:
        length = int(value) if value is not None else None
    except ValueError:
        return None
    return length if length is not None and length >= 0 else None


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _verify_parquet(path: Path, url: str, size: int) -> None:
    # A proxy's HTML error page or a cut-off file can arrive with status 200 and a matching
    # length; only the parquet structure tells them apart from the real thing.
    bad = f"{url} did not return a valid parquet file ({size} bytes"
    if size < 2 * len(_PARQUET_MAGIC):
        raise StageError(f"{bad}); nothing was cached")
    with open(path, "rb") as handle:
        head = handle.read(len(_PARQUET_MAGIC))
        handle.seek(-len(_PARQUET_MAGIC), os.SEEK_END)
        tail = handle.read(len(_PARQUET_MAGIC))
    if head != _PARQUET_MAGIC or tail != _PARQUET_MAGIC:
        raise StageError(f"{bad}, no PAR1 magic at start/end); nothing was cached")
    try:
        pq.read_metadata(path)
    except Exception as exc:  # pyarrow raises several types (ArrowInvalid, OSError) for a bad footer
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StageError(f"{bad}, unreadable footer: {first_line}); nothing was cached") from exc


def _describe(exc: requests.RequestException, params: DataParams) -> str:
    """A short reason instead of urllib3's nested repr, which runs to several hundred characters."""
    text = str(exc)
    if isinstance(exc, requests.ConnectTimeout):
        return f"connection timed out after {_timeouts(params)[0]:g}s"
    if isinstance(exc, requests.ReadTimeout) or "Read timed out" in text:
        return f"no data for {params.timeout_s:g}s (read timeout)"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or "IncompleteRead" in text:
        return "connection closed mid-download"
    if any(marker in text for marker in _DNS_MARKERS):
        return "DNS lookup failed (no network?)"
    if "Connection refused" in text:
        return "connection refused"
    if "Network is unreachable" in text:
        return "network unreachable"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return type(exc).__name__


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
