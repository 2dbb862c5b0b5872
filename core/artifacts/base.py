"""What every artifact model shares: its path, its atomic write and its checked read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from core.io import StageError, write_json


class ArtifactError(StageError):
    """An artifact file that is missing or does not hold what its model says (one line)."""


class Part(BaseModel):
    """A nested object of an artifact: no key beyond the declared ones, in either direction."""

    model_config = ConfigDict(extra="forbid")

    def as_dict(self) -> dict[str, Any]:
        """The JSON object, as the file holds it (for code that still takes dicts: core/trigger.py)."""
        return self.model_dump(exclude_unset=True)


class Artifact(Part):
    """A JSON file the pipeline or the loop writes, as a model.

    Written as ``model_dump(exclude_unset=True)`` through :func:`core.io.write_json` (keys sorted,
    indent 2): a key the writer did not give is absent, as it was from the dict, and a key given
    as None is ``null``. A file read back and written again is byte for byte the same file
    (tests/test_artifacts.py checks the committed ones).
    """

    PATH: ClassVar[Path]
    # What writes the file: the missing-file error says how to get it.
    WRITTEN_BY: ClassVar[str]

    @classmethod
    def read(cls, path: Path | None = None) -> Self:
        path = cls.PATH if path is None else path
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ArtifactError(f"{path}: missing; {cls.WRITTEN_BY} writes it") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{path}: not readable JSON: {exc}") from None
        return cls.parse(data, path)

    @classmethod
    def parse(cls, data: Any, source: Path | str) -> Self:
        """``data`` (the file's JSON, from ``source``) as the model, or a one-line error naming it."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise ArtifactError(
                f"{source}: malformed ({cls.__name__}): {where}: {first['msg']}"
                + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else "")
            ) from None

    def write(self, path: Path | None = None) -> Path:
        path = self.PATH if path is None else path
        write_json(self.as_dict(), path)
        return path
