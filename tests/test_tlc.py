"""core/sources/tlc.py against a local HTTP server standing in for the TLC site (no internet needed).

Every failure mode a real download meets - unpublished month, flaky server, dead network, a body
cut short, a proxy's HTML page, a stalled read - is served byte for byte from 127.0.0.1, and each
test checks both the user-facing error and that the cache holds nothing partial afterwards.

Size (~400 lines): one local stand-in for the TLC site serves every failure mode.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.io import StageError
from core.params import DataParams
from core.sources import tlc

REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tlc"
MONTH = "2024-01"


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # "auto" = the true length; None = no header (body delimited by closing the connection);
    # an int = whatever we want to claim, e.g. more than we send.
    content_length: int | str | None = "auto"
    stall_before_s: float = 0.0
    stall_after_bytes: int | None = None
    stall_s: float = 0.0


class FakeTLC:
    """Serves scripted replies per path; the last reply of a script repeats."""

    def __init__(self) -> None:
        self.routes: dict[str, list[Reply]] = {}
        self.requests: list[tuple[str, str]] = []
        self.release = threading.Event()  # wakes stalled handlers at teardown
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, head=False)

            def do_HEAD(self) -> None:
                fake._handle(self, head=True)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        # A short poll keeps shutdown() (and so each test's teardown) quick.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.port}/trip-data/green_tripdata_{{month}}.parquet"

    def path_for(self, month: str) -> str:
        return f"/trip-data/green_tripdata_{month}.parquet"

    def serve(self, month: str, *replies: Reply) -> None:
        self.routes[self.path_for(month)] = list(replies)

    def count(self, method: str = "GET") -> int:
        return sum(1 for m, _ in self.requests if m == method)

    def _handle(self, handler: http.server.BaseHTTPRequestHandler, *, head: bool) -> None:
        self.requests.append((handler.command, handler.path))
        script = self.routes.get(handler.path) or [Reply(status=404, body=b"<Error>NoSuchKey</Error>")]
        reply = script.pop(0) if len(script) > 1 else script[0]
        try:
            if reply.stall_before_s:
                self.release.wait(reply.stall_before_s)
            handler.send_response(reply.status)
            for key, value in reply.headers.items():
                handler.send_header(key, value)
            length = len(reply.body) if reply.content_length == "auto" else reply.content_length
            if length is not None:
                handler.send_header("Content-Length", str(length))
            handler.end_headers()
            if head:
                return
            if reply.stall_after_bytes is not None:
                handler.wfile.write(reply.body[: reply.stall_after_bytes])
                handler.wfile.flush()
                self.release.wait(reply.stall_s)
                handler.wfile.write(reply.body[reply.stall_after_bytes :])
            else:
                handler.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test): exactly what we wanted to provoke


@pytest.fixture
def server() -> Iterator[FakeTLC]:
    fake = FakeTLC()
    fake.thread.start()
    yield fake
    fake.release.set()
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture(autouse=True)
def _fast_and_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tlc, "BACKOFF_BASE_S", 0.0)
    # A proxy from the environment must not intercept requests meant for 127.0.0.1.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def make_params(server: FakeTLC | None, tmp_path: Path, **overrides: object) -> DataParams:
    values: dict[str, object] = {
        "source": "tlc",
        "tlc_url": server.url_template if server else "http://127.0.0.1:9/{month}.parquet",
        "cache_dir": str(tmp_path / "cache"),
        "timeout_s": 5,
        "retries": 2,
    }
    values.update(overrides)
    return DataParams(**values)


def parquet_bytes(rows: int = 50) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"trip_distance": [float(i) for i in range(rows)]}), sink)
    return sink.getvalue().to_pybytes()


def cache_contents(params: DataParams) -> list[str]:
    folder = Path(params.cache_dir)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- URLs and successful downloads ------------------------------------------------------------


def test_default_url_template() -> None:
    assert tlc.tlc_url("2024-03", DataParams()) == (
        "https://d37ci6vzurychx.cloudfront.net/trip-data/green_tripdata_2024-03.parquet"
    )


def test_download_lands_in_cache(server: FakeTLC, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = parquet_bytes()
    server.serve(MONTH, Reply(body=body))
    params = make_params(server, tmp_path)

    path = tlc.fetch_month(MONTH, params)

    assert path == Path(params.cache_dir) / f"green_tripdata_{MONTH}.parquet"
    assert path.read_bytes() == body
    assert cache_contents(params) == [path.name]  # no temp file left over
    # stderr is not a TTY under pytest, so the progress bar stays silent.
    assert capsys.readouterr().err == ""


def test_download_without_content_length(server: FakeTLC, tmp_path: Path) -> None:
    body = parquet_bytes()
    server.serve(MONTH, Reply(body=body, content_length=None))
    params = make_params(server, tmp_path)
    assert tlc.fetch_month(MONTH, params, progress=False).read_bytes() == body


@pytest.mark.realdata
def test_real_tlc_file_round_trips(server: FakeTLC, tmp_path: Path) -> None:
    source = REAL_DIR / "green_tripdata_2021-01.parquet"
    if not source.is_file():
        pytest.skip(f"{REAL_DIR} not available")
    server.serve("2021-01", Reply(body=source.read_bytes()))
    params = make_params(server, tmp_path)

    path = tlc.fetch_month("2021-01", params, progress=False)

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    sums = dict(reversed(line.split()) for line in (REAL_DIR / "SHA256SUMS").read_text().splitlines())
    assert digest == sums[source.name]
    assert pq.read_metadata(path).num_rows > 0


def test_second_call_hits_cache(server: FakeTLC, tmp_path: Path) -> None:
    server.serve(MONTH, Reply(body=parquet_bytes()))
    params = make_params(server, tmp_path)
    first = tlc.fetch_month(MONTH, params, progress=False)
    assert server.count() == 1

    again = tlc.fetch_month(MONTH, params, progress=False)
    # Even with the site unreachable the cached month is served.
    offline = tlc.fetch_month(MONTH, params.model_copy(update={"tlc_url": "http://127.0.0.1:9/{month}"}))

    assert again == first == offline
    assert server.count() == 1


# --- HTTP errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 404])
def test_unpublished_month(server: FakeTLC, tmp_path: Path, status: int) -> None:
    server.serve("2099-01", Reply(status=status, body=b"<Error>AccessDenied</Error>"))
    params = make_params(server, tmp_path)

    with pytest.raises(StageError) as info:
        tlc.fetch_month("2099-01", params, progress=False)

    message = str(info.value)
    url = tlc.tlc_url("2099-01", params)
    assert f"TLC has not published 2099-01 yet (HTTP {status} from {url})" in message
    assert "data.source: dir" in message and "data.dir" in message and "synthetic" in message
    assert "latest-month" in message
    assert "\n" not in message
    assert server.count() == 1  # a definite "no" is not retried
    assert cache_contents(params) == []


def test_other_http_error_names_status_and_url(server: FakeTLC, tmp_path: Path) -> None:
    server.serve(MONTH, Reply(status=410, body=b"gone"))
    params = make_params(server, tmp_path)
    with pytest.raises(StageError, match=r"HTTP 410 Gone from http://127\.0\.0\.1:\d+/trip-data/"):
        tlc.fetch_month(MONTH, params, progress=False)
    assert server.count() == 1


def test_flaky_server_succeeds_after_retries(server: FakeTLC, tmp_path: Path) -> None:
    body = parquet_bytes()
    server.serve(MONTH, Reply(status=500), Reply(status=500), Reply(body=body))
    params = make_params(server, tmp_path, retries=2)

    assert tlc.fetch_month(MONTH, params, progress=False).read_bytes() == body
    assert server.count() == 3


def test_retry_after_is_honoured_within_reason(
    server: FakeTLC, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(tlc.time, "sleep", sleeps.append)
    monkeypatch.setattr(tlc, "RETRY_AFTER_MAX_S", 7.0)
    server.serve(
        MONTH,
        Reply(status=429, headers={"Retry-After": "3"}),
        Reply(status=503, headers={"Retry-After": "3600"}),
        Reply(body=parquet_bytes()),
    )
    tlc.fetch_month(MONTH, make_params(server, tmp_path), progress=False)
    assert sleeps == [3.0, 7.0]  # obeyed, then capped


def test_retries_exhausted(server: FakeTLC, tmp_path: Path) -> None:
    server.serve(MONTH, Reply(status=503, body=b"busy"))
    params = make_params(server, tmp_path, retries=2)

    with pytest.raises(StageError) as info:
        tlc.fetch_month(MONTH, params, progress=False)

    message = str(info.value)
    assert tlc.tlc_url(MONTH, params) in message
    assert "HTTP 503" in message and "gave up after 3 attempts" in message
    assert "data.source: dir" in message and "synthetic" in message
    assert server.count() == 3
    assert cache_contents(params) == []


# --- network failures ------------------------------------------------------------------------------


def test_connection_refused(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/green_tripdata_{{month}}.parquet"
    params = make_params(None, tmp_path, tlc_url=url, retries=1)
    with pytest.raises(StageError) as info:
        tlc.fetch_month(MONTH, params, progress=False)
    message = str(info.value)
    assert "connection refused" in message and "gave up after 2 attempts" in message
    assert "127.0.0.1" in message and "data.source: dir" in message
    assert len(message) < 500  # not urllib3's nested repr
    assert cache_contents(params) == []


def test_dns_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    params = make_params(None, tmp_path, tlc_url="http://tlc.example.invalid/{month}.parquet", retries=1)
    with pytest.raises(StageError, match=r"DNS lookup failed .*gave up after 2 attempts"):
        tlc.fetch_month(MONTH, params, progress=False)
    assert cache_contents(params) == []


def test_truncated_body_leaves_nothing(server: FakeTLC, tmp_path: Path) -> None:
    body = parquet_bytes(2000)
    server.serve(MONTH, Reply(body=body[: len(body) // 2], content_length=len(body)))
    params = make_params(server, tmp_path, retries=1)

    with pytest.raises(StageError, match=r"gave up after 2 attempts") as info:
        tlc.fetch_month(MONTH, params, progress=False)

    assert f"of {len(body)} bytes" in str(info.value)
    assert server.count() == 2  # a cut connection is worth another try
    # The cache dir was created for the temp file, which must be gone (hidden names included).
    assert cache_contents(params) == []


def test_truncated_body_without_length_is_caught_by_parquet_check(server: FakeTLC, tmp_path: Path) -> None:
    body = parquet_bytes(2000)
    server.serve(MONTH, Reply(body=body[: len(body) // 2], content_length=None))
    params = make_params(server, tmp_path)
    with pytest.raises(StageError, match="did not return a valid parquet file"):
        tlc.fetch_month(MONTH, params, progress=False)
    assert cache_contents(params) == []


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"<html><body>Captive portal: please log in</body></html>", "no PAR1 magic"),
        (b"PAR1" + b"\x00garbage" * 20 + b"PAR1", "unreadable footer"),
        (b"PAR", "3 bytes"),
    ],
)
def test_corrupt_body_leaves_nothing(server: FakeTLC, tmp_path: Path, body: bytes, detail: str) -> None:
    server.serve(MONTH, Reply(body=body))
    params = make_params(server, tmp_path)
    with pytest.raises(StageError, match="did not return a valid parquet file") as info:
        tlc.fetch_month(MONTH, params, progress=False)
    assert detail in str(info.value) and "\n" not in str(info.value)
    assert server.count() == 1  # same bytes would come back: no point retrying
    assert cache_contents(params) == []


@pytest.mark.parametrize("where", ["before headers", "mid body"])
def test_read_timeout_is_retried_then_fails(server: FakeTLC, tmp_path: Path, where: str) -> None:
    body = parquet_bytes()
    if where == "before headers":
        stall = Reply(body=body, stall_before_s=10)
    else:
        stall = Reply(body=body, stall_after_bytes=100, stall_s=10)
    server.serve(MONTH, stall)
    params = make_params(server, tmp_path, timeout_s=0.2, retries=1)

    with pytest.raises(StageError, match=r"read timeout.*gave up after 2 attempts"):
        tlc.fetch_month(MONTH, params, progress=False)

    assert server.count() == 2
    assert cache_contents(params) == []


def test_invalid_month_is_a_stage_error(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="invalid month"):
        tlc.fetch_month("2024-13", make_params(None, tmp_path))


# --- probe_month --------------------------------------------------------------------------------


def test_probe_published_month(server: FakeTLC, tmp_path: Path) -> None:
    server.serve(MONTH, Reply(body=parquet_bytes()))
    params = make_params(server, tmp_path)
    assert tlc.probe_month(MONTH, params) is True
    assert server.requests == [("HEAD", server.path_for(MONTH))]  # no body fetched
    assert cache_contents(params) == []


@pytest.mark.parametrize("status", [403, 404])
def test_probe_unpublished_month(server: FakeTLC, tmp_path: Path, status: int) -> None:
    server.serve("2099-01", Reply(status=status))
    assert tlc.probe_month("2099-01", make_params(server, tmp_path)) is False


def test_probe_network_failure_raises(tmp_path: Path) -> None:
    params = make_params(None, tmp_path, tlc_url=f"http://127.0.0.1:{closed_port()}/{{month}}", retries=1)
    # An outage must not look like "not published", or latest-month would walk back forever.
    with pytest.raises(StageError, match="connection refused"):
        tlc.probe_month(MONTH, params)


def test_probe_retries_server_errors(server: FakeTLC, tmp_path: Path) -> None:
    server.serve(MONTH, Reply(status=502), Reply(status=200))
    assert tlc.probe_month(MONTH, make_params(server, tmp_path)) is True
    assert server.count("HEAD") == 2
