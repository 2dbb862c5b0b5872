"""params.yaml as the loop edits and compares it: comments, order and quoting kept."""

from __future__ import annotations

import io
from pathlib import Path

import yaml

from autoops.gitops import Git, LoopError
from stages.io import write_text
from stages.params import Params, ParamsError, params_from_dict
from stages.paths import PARAMS_FILE


def set_months(path: Path, **months: str) -> bool:
    """Set ``months.<key>`` in params.yaml, keeping its comments, order and quoting; True if changed."""
    from ruamel.yaml import YAML
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096  # never re-wrap a long comment or value
    data = rt.load(path.read_text())
    changed = False
    for key, value in months.items():
        if str(data["months"].get(key)) != value:
            # Quoted, like the file's own months: a bare 2024-05 is a string in YAML today, but
            # a quoted one cannot be misread by any YAML loader.
            data["months"][key] = DoubleQuotedScalarString(value)
            changed = True
    if changed:
        buffer = io.StringIO()
        rt.dump(data, buffer)
        # Validated before writing: an impossible combination (current before reference) is an
        # error for the caller, never a broken params.yaml left behind.
        params_from_dict(yaml.safe_load(buffer.getvalue()) or {}, str(path))
        write_text(buffer.getvalue(), path)
    return changed


def only_current_month_changed(git: Git) -> bool:
    committed = git.show("HEAD", PARAMS_FILE.as_posix())
    if committed is None:
        return False
    before = yaml.safe_load(committed) or {}
    after = yaml.safe_load((git.root / PARAMS_FILE).read_text()) or {}
    for side in (before, after):
        side.get("months", {}).pop("current", None)
    return before == after


def params_at(git: Git, sha: str, base: str) -> Params:
    text = git.show(sha, PARAMS_FILE.as_posix())
    if text is None:
        raise LoopError(f"{base} has no {PARAMS_FILE}")
    try:
        return params_from_dict(yaml.safe_load(text) or {}, f"{base}:{PARAMS_FILE}")
    except ParamsError as exc:
        raise LoopError(str(exc)) from exc
