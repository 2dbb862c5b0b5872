"""Build .dvc/plots_offline.html: the HTML page `dvc plots show` fills, with vega, vega-lite and
vega-embed inlined, so the plots render with no network (DVC's own page loads them from a CDN).

    python scripts/build_plots_template.py            # rewrite the template (needs the npm registry)
    python scripts/build_plots_template.py --check    # exit 1 if the committed template is stale

The versions are the ones dvc-render's page asks the CDN for (dvc_render.vega.VegaRenderer.SCRIPTS):
DVC writes vega-lite 5 specs for exactly these. Each tarball is verified against the integrity hash
npm published for it, and the output is a pure function of the three files (same bytes every build).
.dvc/config points DVC at the template (`plots.html_template`); the page has no `{scripts}`
placeholder, which is where DVC would otherwise put its CDN <script> tags.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".dvc" / "plots_offline.html"
REGISTRY = "https://registry.npmjs.org"
# (package, version, file in the tarball, npm's dist.integrity)
PACKAGES = [
    (
        "vega",
        "5.20.2",
        "build/vega.min.js",
        "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw==",
    ),
    (
        "vega-lite",
        "5.2.0",
        "build/vega-lite.min.js",
        "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw==",
    ),
    (
        "vega-embed",
        "6.18.2",
        "build/vega-embed.min.js",
        "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
    ),
]

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plots</title>
    <!-- Built by scripts/build_plots_template.py: {versions}, inlined so the page works offline. -->
{scripts}
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def fetch(package: str, version: str, member: str, integrity: str) -> str:
    url = f"{REGISTRY}/{package}/-/{package}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response:
        data = response.read()
    algorithm, _, expected = integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if digest != expected:
        raise SystemExit(f"{url}: integrity mismatch ({algorithm} {digest}, npm says {expected})")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        handle = tar.extractfile(f"package/{member}")
        if handle is None:
            raise SystemExit(f"{url}: no {member} in the tarball")
        return handle.read().decode("utf-8")


def inline_script(source: str) -> str:
    # "</script" inside the code would end the inline element early; "<\/" means the same in JS.
    return "    <script>\n" + source.replace("</script", "<\\/script") + "\n    </script>"


def build() -> str:
    scripts = [inline_script(fetch(*package)) for package in PACKAGES]
    versions = ", ".join(f"{name}@{version}" for name, version, _, _ in PACKAGES)
    page = PAGE.format(refresh_tag="{refresh_tag}", versions=versions, scripts="\n".join(scripts))
    # dvc-render fills these by plain replacement: the libraries must not contain them.
    for placeholder in ("{scripts}", "{refresh_tag}", "{plot_divs}"):
        expected = 0 if placeholder == "{scripts}" else 1
        if page.count(placeholder) != expected:
            raise SystemExit(f"the built page holds {placeholder} {page.count(placeholder)} times")
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed template")
    args = parser.parse_args()
    page = build()
    if args.check:
        current = TEMPLATE.read_text(encoding="utf-8") if TEMPLATE.exists() else ""
        if current != page:
            sys.exit(f"{TEMPLATE.relative_to(ROOT)} is stale: run python scripts/build_plots_template.py")
        print(f"{TEMPLATE.relative_to(ROOT)} is up to date")
        return
    TEMPLATE.write_text(page, encoding="utf-8")
    print(f"wrote {TEMPLATE.relative_to(ROOT)} ({len(page) // 1024} KiB)")


if __name__ == "__main__":
    main()
