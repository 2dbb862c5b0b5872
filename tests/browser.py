"""The pages people open, in a real browser: headless Chromium from the system's packages (Debian's
``chromium``), driven by Playwright, with the network limited to loopback.

Every request a page makes to a host other than loopback is aborted and recorded, and so are failed
requests, HTTP errors and uncaught script errors; :meth:`PageLog.problems` lists them, so a page
that would be blank offline or behind a firewall fails its test. The checks here are shared by
tests/test_browser.py and the screenshot command:

    python -m tests.browser [--out DIR]   # PNG screenshots of every page (default .cache/screenshots)

Size (~500 lines): the page checks and the screenshot command share one harness (the loopback-only
routing, PageLog, the servers behind the pages).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Headless, no sandbox (CI runs as root), and none of Chromium's own calls home (updates, sync,
# QUIC probes): the only traffic is the page's. Playwright gives every launch a fresh profile dir.
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
TIMEOUT_MS = 30_000
# What a person would send from /docs: a real trip (serve/README.md's first curl example).
TRIP = {
    "pu_location_id": 74,
    "do_location_id": 168,
    "trip_distance": 2.3,
    "pickup_datetime": "2021-01-15T08:30:00",
}


def find_chromium() -> str | None:
    """The system Chromium (AUTOOPS_CHROMIUM overrides); None where there is none."""
    if explicit := os.environ.get("AUTOOPS_CHROMIUM"):
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    return None


@contextlib.contextmanager
def launch(executable: str) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageLog:
    outside: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    http_errors: list[str] = field(default_factory=list)
    script_errors: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return (
            [f"request outside loopback: {url}" for url in self.outside]
            + [f"failed request: {what}" for what in self.failed]
            + [f"HTTP error: {what}" for what in self.http_errors]
            + [f"script error: {what}" for what in self.script_errors]
        )


def is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    # data: and blob: URLs are the page's own bytes, never a network request.
    return parts.scheme in ("data", "blob", "about") or (parts.hostname or "") in LOOPBACK


@contextlib.contextmanager
def open_page(browser: Browser, url: str, screenshot: Path | None = None) -> Iterator[tuple[Page, PageLog]]:
    """``url`` in a fresh context whose requests beyond loopback are aborted and recorded.

    The screenshot (full page) is taken when the block ends, also after a failed check, so the
    picture shows what the failure looked like.
    """
    from playwright.sync_api import Request, Route

    log = PageLog()
    context = browser.new_context(viewport=VIEWPORT, service_workers="block")
    context.set_default_timeout(TIMEOUT_MS)

    def guard(route: Route) -> None:
        if is_loopback(route.request.url):
            route.continue_()
        else:
            log.outside.append(route.request.url)
            route.abort("blockedbyclient")

    def failed(request: Request) -> None:
        if request.url not in log.outside:
            log.failed.append(f"{request.url} ({request.failure})")

    context.route("**/*", guard)
    page = context.new_page()
    page.on("requestfailed", failed)
    page.on("response", lambda r: r.status >= 400 and log.http_errors.append(f"{r.status} {r.url}"))
    page.on("pageerror", lambda error: log.script_errors.append(str(error)))
    try:
        page.goto(url, wait_until="load")
        yield page, log
    except Exception as exc:
        # A blank page times out a check; the request that broke it is the useful part.
        if (problems := log.problems()) and problems[0] not in str(exc):
            raise AssertionError(f"{url}: {exc}\npage problems:\n  " + "\n  ".join(problems)) from exc
        raise
    finally:
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(Exception):  # a screenshot must never hide the real failure
                page.screenshot(path=str(screenshot), full_page=True)
        context.close()


def settle(page: Page) -> None:
    # Late requests (fonts, images a script adds) must be in the log before it is judged.
    with contextlib.suppress(Exception):
        page.wait_for_load_state("networkidle", timeout=5_000)


class _ResourceLinks(HTMLParser):
    """URLs a page loads by itself: script/img/iframe sources and stylesheet/icon links (not <a>)."""

    LOADING: ClassVar[dict[str, str]] = {
        **dict.fromkeys(("script", "img", "iframe", "source", "embed", "video", "audio"), "src"),
        "object": "data",
        "link": "href",
    }

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = self.LOADING.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


def remote_references(page_html: str) -> list[str]:
    """The resources an HTML file would fetch from another host (http(s) or protocol-relative)."""
    parser = _ResourceLinks()
    parser.feed(page_html)
    remote = []
    for url in parser.urls:
        parts = urlsplit(url.strip())
        if url.strip().startswith("//") or (parts.scheme in ("http", "https") and not is_loopback(url)):
            remote.append(url)
    return remote


@contextlib.contextmanager
def serve_directory(folder: Path) -> Iterator[str]:
    """``folder`` over HTTP on a free loopback port (how the files' relative links resolve)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- the pages ---------------------------------------------------------------------------------------


def openapi_operations(schema: dict[str, Any]) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return {(m.upper(), path) for path, item in schema["paths"].items() for m in item if m in methods}


def check_swagger_ui(page: Page, operations: set[tuple[str, str]]) -> dict[str, Any]:
    """Every operation is listed, and "Try it out" on POST /predict returns a prediction (the JSON)."""
    page.locator(".opblock").first.wait_for()
    blocks = page.locator(".opblock")
    shown = set()
    for i in range(blocks.count()):
        block = blocks.nth(i)
        method = block.locator(".opblock-summary-method").inner_text().strip().upper()
        path = block.locator(".opblock-summary-path").get_attribute("data-path")
        shown.add((method, path))
    assert shown == operations, f"Swagger UI shows {sorted(shown)}, the schema has {sorted(operations)}"

    predict = page.locator(".opblock-post").filter(has=page.locator('[data-path="/predict"]'))
    predict.locator(".opblock-summary").first.click()
    predict.get_by_role("button", name="Try it out").click()
    predict.locator("textarea.body-param__text").fill(json.dumps(TRIP, indent=2))
    predict.get_by_role("button", name="Execute").click()
    live = predict.locator(".live-responses-table .response")
    live.locator(".response-col_status").first.wait_for()
    status = live.locator(".response-col_status").first.inner_text().strip()
    body = live.locator(".response-col_description pre").first.inner_text()
    assert status == "200", f"Try it out on /predict answered {status}: {body}"
    answer = json.loads(body)
    assert answer["duration_min"] > 0 and answer["model_version"], answer
    return answer


def check_drift_report(page: Page, drift: dict[str, Any]) -> None:
    """Evidently's drift table is drawn and agrees with the drift stage's metrics (``drift.json``):
    one row per checked column (10 to a page), its verdict, and its two distribution charts."""
    table = page.locator("table").filter(has_text="Drift Score").first
    table.wait_for()
    rows = table.evaluate(
        """t => [...t.tBodies[0].rows].map(r => ({
            cells: [...r.cells].map(c => c.innerText.trim()).filter(text => text),
            charts: r.querySelectorAll('canvas, svg.main-svg').length,
        }))"""
    )
    columns = drift["columns"]
    assert len(rows) == min(10, len(columns)), (
        f"{len(rows)} rows in the drift table for {len(columns)} columns"
    )
    for row in rows:
        column = row["cells"][0] if row["cells"] else None
        assert column in columns, f"unknown column in the drift table: {row}"
        verdict = "Detected" if columns[column]["drifted"] else "Not Detected"
        assert verdict in row["cells"], f"{column}: want {verdict!r}, the table says {row['cells']}"
        assert row["charts"] >= 2, f"{column}: {row['charts']} distribution charts drawn, want 2"
    page.get_by_text(re.compile(rf"\b1\D{len(rows)} of {len(columns)}\b")).first.wait_for(state="attached")


_PLOT_AREAS = """() => [...document.querySelectorAll('body > div[id]')].map(div => {
    const mark = div.querySelector('canvas, svg.marks');
    const box = mark ? mark.getBoundingClientRect() : null;
    return [div.id, box ? box.width * box.height : 0];
})"""


def check_plots(page: Page, expected: int) -> None:
    """Every plot of `dvc plots show` is drawn: each plot's div holds a canvas or svg with an area
    (a plot whose script failed or whose data is missing stays empty or zero-sized)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with contextlib.suppress(PlaywrightTimeout):  # judged below, with the names of the blank plots
        page.wait_for_function(f"() => ({_PLOT_AREAS})().filter(p => p[1] > 0).length >= {expected}")
    drawn = dict(page.evaluate(_PLOT_AREAS))
    blank = [name for name, area in drawn.items() if not area]
    assert len(drawn) == expected and not blank, (
        f"{len(drawn)} plots on the page, want {expected}; blank: {blank}"
    )


def gallery(folder: Path, images: list[Path], title: str) -> Path:
    """An HTML page in ``folder`` showing ``images`` (which must be inside it) by relative links."""
    items = "\n".join(
        f'<figure><img src="{html.escape(p.relative_to(folder).as_posix())}" style="max-width:100%">'
        f"<figcaption>{html.escape(p.name)}</figcaption></figure>"
        for p in images
    )
    page = folder / f"{re.sub(r'[^a-z0-9]+', '_', title.lower())}.html"
    page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                    f"</head><body><h1>{html.escape(title)}</h1>\n{items}\n</body></html>")  # fmt: skip
    return page


_DECODED = """async () => Promise.all([...document.images].map(async img => {
    try { await img.decode(); } catch (error) { return [img.src, 0, 0, false]; }
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    const row = context.getImageData(0, canvas.height - 1, canvas.width, 1).data;
    let drawn = false;
    for (let i = 3; i < row.length && !drawn; i += 4) drawn = row[i] > 0;
    return [img.src, img.naturalWidth, img.naturalHeight, drawn];
}))"""


def check_images(page: Page, expected: int) -> list[tuple[str, int, int]]:
    """Every <img> loaded and decoded to its last row: ``(src, width, height)`` of each.

    The last row matters because Chromium shows a truncated PNG as far as it goes, with its full
    size; the report PNGs are opaque (matplotlib's white figure), so an empty last row means the
    file stops early.
    """
    page.wait_for_function("() => [...document.images].every(img => img.complete)")
    images = page.evaluate(_DECODED)
    assert len(images) == expected, f"{len(images)} images on the page, want {expected}"
    broken = [src for src, width, height, _ in images if not (width and height)]
    assert not broken, f"images that did not load: {broken}"
    truncated = [src for src, _, _, drawn in images if not drawn]
    assert not truncated, f"images whose last row is empty (truncated files?): {truncated}"
    return [(src, width, height) for src, width, height, _ in images]


def markdown_images(markdown_file: Path) -> list[Path]:
    """The images a markdown report links (``![..](relative.png)``), resolved beside the file."""
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", markdown_file.read_text())
    return [(markdown_file.parent / link).resolve() for link in links if "://" not in link]


def dvc_plots_html(project: Path, out: Path) -> Path:
    """`dvc plots show` in ``project``, written to ``out``; the HTML file."""
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    result = subprocess.run(
        ["dvc", "plots", "show", "-o", str(out)], cwd=project, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"dvc plots show failed:\n{result.stdout}{result.stderr}")
    return out / "index.html"


def plot_count(project: Path) -> int:
    import yaml

    return len(yaml.safe_load((project / "dvc.yaml").read_text()).get("plots", []))


# --- each page, checked (shared by the tests and the screenshot command) --------------------------------


def assert_clean(log: PageLog, what: str) -> None:
    problems = log.problems()
    assert not problems, f"{what}:\n  " + "\n  ".join(problems)


def docs_page(browser: Browser, base_url: str, screenshot: Path | None) -> dict[str, Any]:
    """The service's /docs: every operation of /openapi.json shown, Try it out on /predict answers."""
    import httpx

    operations = openapi_operations(httpx.get(f"{base_url}/openapi.json", timeout=30).json())
    with open_page(browser, f"{base_url}/docs", screenshot) as (page, log):
        answer = check_swagger_ui(page, operations)
        settle(page)
        assert_clean(log, "/docs")
    return answer


def drift_report_page(browser: Browser, report: Path, drift: dict[str, Any], screenshot: Path | None) -> None:
    with (
        serve_directory(report.parent) as url,
        open_page(browser, f"{url}/{report.name}", screenshot) as (page, log),
    ):
        check_drift_report(page, drift)
        settle(page)
        assert_clean(log, str(report))


def plots_page(browser: Browser, project: Path, out: Path, screenshot: Path | None) -> Path:
    """`dvc plots show` in ``project`` into ``out``: no remote reference, every plot drawn offline."""
    index = dvc_plots_html(project, out)
    remote = remote_references(index.read_text(encoding="utf-8"))
    assert not remote, f"{index} loads from other hosts: {remote}"
    with (
        serve_directory(index.parent) as url,
        open_page(browser, f"{url}/{index.name}", screenshot) as (page, log),
    ):
        check_plots(page, plot_count(project))
        settle(page)
        assert_clean(log, "dvc plots show")
    return index


def images_page(
    browser: Browser, folder: Path, images: list[Path], title: str, screenshot: Path | None
) -> list[tuple[str, int, int]]:
    """``images`` (inside ``folder``) on one page: each one loads and decodes."""
    assert images, f"{title}: no images"
    page_file = gallery(folder, images, title)
    with (
        serve_directory(folder) as url,
        open_page(browser, f"{url}/{page_file.name}", screenshot) as (page, log),
    ):
        loaded = check_images(page, len(images))
        assert_clean(log, title)
    return loaded


# --- screenshots on demand -----------------------------------------------------------------------------


@dataclass
class Shots:
    made: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def take(self, screenshot: Path, check: Callable[[Path], object]) -> None:
        """Run one page's check; a failure is reported, and the other pages still get their picture."""
        try:
            check(screenshot)
        except Exception as exc:
            self.failed.append(f"{screenshot.name}: {exc}")
        if screenshot.exists():
            self.made.append(screenshot)


def screenshots(out: Path) -> Shots:
    """The pages of this working tree, checked and photographed into ``out``."""
    from serve.testing import ServerProcess, sklearn_server_env, small_model_dir

    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no Chromium found: apt-get install chromium (or set AUTOOPS_CHROMIUM)")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()  # a picture from an earlier run must not pass for this one's
    shots = Shots()
    with tempfile.TemporaryDirectory() as tmp, launch(chromium) as browser:
        work = Path(tmp)
        # /docs needs a running service, and any model will do: a small one from the pipeline's
        # train stage keeps this independent of whether ./run.sh has been run.
        env = sklearn_server_env(small_model_dir(work / "model", seed=1), AUTOOPS_PREDICTION_LOG="off")
        with ServerProcess(cwd=work, env=env, args=("--workers", "1")) as server:
            shots.take(out / "docs.png", lambda shot: docs_page(browser, server.url, shot))

        report, drift = ROOT / "reports" / "drift_report.html", ROOT / "reports" / "metrics" / "drift.json"
        if report.exists() and drift.exists():
            metrics = json.loads(drift.read_text())
            shots.take(
                out / "drift_report.png", lambda shot: drift_report_page(browser, report, metrics, shot)
            )
        else:
            shots.notes.append(f"no {report.relative_to(ROOT)}: run ./run.sh (or dvc repro) first")

        shots.take(out / "dvc_plots.png", lambda shot: plots_page(browser, ROOT, work / "dvc_plots", shot))

        # The committed backtest figure and, on a retrain branch, the PR report's plots.
        pngs = [ROOT / "reports" / "backtest.png", *sorted((ROOT / "reports" / "loop").glob("*.png"))]
        shown = work / "images"
        shown.mkdir()
        copies = []
        for png in (p for p in pngs if p.exists()):
            copies.append(shown / png.relative_to(ROOT).as_posix().replace("/", "__"))
            shutil.copyfile(png, copies[-1])
        if copies:
            shots.take(
                out / "report_images.png",
                lambda shot: images_page(browser, shown, copies, "Report images", shot),
            )
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshots of the pages Auto-Ops hands people.")
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "screenshots", help="where the PNGs go")
    args = parser.parse_args()
    shots = screenshots(args.out.resolve())
    for path in shots.made:
        print(path)
    for note in shots.notes:
        print(f"note: {note}")
    for failure in shots.failed:
        print(f"FAILED {failure}", file=sys.stderr)
    sys.exit(1 if shots.failed else 0)


if __name__ == "__main__":
    main()
