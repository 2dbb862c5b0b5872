"""params.yaml as the loop edits and compares it: comments, order and quoting kept."""

from __future__ import annotations

import io
from pathlib import Path

import yaml

from autoops.gitops import Git, LoopError
from core.io import write_text
from core.params import Params, ParamsError, params_from_dict
from core.paths import PARAMS_FILE


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


def accept_data_problems(path: Path, month: str) -> bool:
    """Add ``month`` to ``data_checks.accepted_months`` (a person vouches for its data); True if changed."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedSeq
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    data = rt.load(path.read_text())
    checks = data.setdefault("data_checks", {})
    accepted = checks.get("accepted_months") or CommentedSeq()
    if month in [str(m) for m in accepted]:
        return False
    accepted.append(DoubleQuotedScalarString(month))
    accepted.fa.set_flow_style()  # one line, as params.yaml writes lists
    checks["accepted_months"] = accepted
    buffer = io.StringIO()
    rt.dump(data, buffer)
    params_from_dict(yaml.safe_load(buffer.getvalue()) or {}, str(path))
    write_text(buffer.getvalue(), path)
    return True


def only_current_month_changed(git: Git) -> bool:
    """params.yaml differs from HEAD only by `check`'s own edits: ``months.current`` and a month
    added to ``data_checks.accepted_months``."""
    committed = git.show("HEAD", PARAMS_FILE.as_posix())
    if committed is None:
        return False
    before = yaml.safe_load(committed) or {}
    after = yaml.safe_load((git.root / PARAMS_FILE).read_text()) or {}
    for side in (before, after):
        side.get("months", {}).pop("current", None)
    accepted_before = set((before.get("data_checks") or {}).pop("accepted_months", None) or [])
    accepted_after = set((after.get("data_checks") or {}).pop("accepted_months", None) or [])
    return before == after and accepted_before <= accepted_after


def params_at(git: Git, sha: str, base: str) -> Params:
    text = git.show(sha, PARAMS_FILE.as_posix())
    if text is None:
        raise LoopError(f"{base} has no {PARAMS_FILE}")
    try:
        return params_from_dict(yaml.safe_load(text) or {}, f"{base}:{PARAMS_FILE}")
    except ParamsError as exc:
        raise LoopError(str(exc)) from exc
