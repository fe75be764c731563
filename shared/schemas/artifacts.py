"""A job's artifacts on the wire: what `GET /jobs/{id}/artifacts` lists, which paths an artifact
may have, and how a job's artifact globs pick files (docs/jobs.md#artifacts).

The agent (collecting rank 0's files), the coordinator (storing them) and the CLI (`jupiter
artifacts --get GLOB`) read paths and globs with these same rules.

Globs are relative to rank 0's folder, `/`-separated, with glob's wildcards: `*` and `?` within
one name, `[...]` a character class, `**` as a whole name any number of folders. A glob that
matches a folder takes the files below it. As with the shell's glob, a wildcard never matches a
name starting with `.` (only a glob naming it does): `checkpoints/**` leaves out a writer's
`.tmp-*` folders.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, Field

from shared.text import control_char

MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255  # what macOS and Linux file systems take for one name


class ArtifactOut(BaseModel):
    path: str = Field(..., description="Relative to rank 0's folder, '/'-separated.",
                      examples=["checkpoints/step-00000200/model.safetensors"])
    size: int = Field(..., description="Bytes.")
    sha256: str = Field(..., description="SHA-256 of the content, hex.")
    modified_at: datetime = Field(..., description="When rank 0 last changed the file (its mtime on the node).")


def path_problem(path: str) -> str | None:
    """Why `path` cannot name an artifact, or None: it must be relative, '/'-separated, plain text,
    without empty, `.` or `..` parts, at most 1024 characters and 255 bytes per name."""
    if not isinstance(path, str) or not path:
        return "an artifact path must not be empty"
    if len(path) > MAX_PATH_CHARS:
        return f"an artifact path is at most {MAX_PATH_CHARS} characters"
    found = control_char(path)
    if found:
        return f"an artifact path must be plain text (it contains {found})"
    if path.startswith("/") or "\\" in path:
        return "an artifact path is relative to rank 0's folder, '/'-separated (no leading '/', no '\\')"
    for name in path.split("/"):
        if name in ("", ".", ".."):
            return "an artifact path has no empty, '.' or '..' parts"
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            return f"a name in an artifact path is at most {MAX_NAME_BYTES} bytes"
    return None


def _name_regex(name: str) -> str:
    """One name of a glob (no '/') as a regular expression for one name of a path."""
    out = [r"(?!\.)"] if name[:1] in ("*", "?", "[") else []  # a wildcard never matches a hidden name
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            j = i + 1
            if j < len(name) and name[j] == "!":
                j += 1
            if j < len(name) and name[j] == "]":
                j += 1
            j = name.find("]", j)
            if j < 0:  # no closing bracket: a plain '['
                out.append(re.escape(ch))
            else:
                inner = name[i + 1:j]
                inner = "^" + inner[1:] if inner.startswith("!") else ("\\" + inner if inner.startswith("^") else inner)
                out.append(f"(?!/)[{inner}]")
                i = j
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


class ArtifactGlobs:
    """A job's artifact globs, compiled: `match(path)` says whether a file's relative path is one
    of the job's artifacts."""

    def __init__(self, globs: list[str]):
        self.globs = list(globs)
        self._compiled: list[tuple[re.Pattern[str] | None, bool]] = []  # None: every folder
        for glob in self.globs:
            names = glob.strip("/").split("/")
            inside = names[-1] == "**"  # "a/**": the files below a, never a file named a
            if inside:
                names = names[:-1]
            if not names:  # "**" alone: every file that is not hidden
                self._compiled.append((None, True))
                continue
            parts = []
            for k, name in enumerate(names):
                if name == "**":
                    parts.append(r"(?:[^/.][^/]*/)*")  # any number of folders, none hidden
                else:
                    parts.append(_name_regex(name) + ("/" if k < len(names) - 1 else ""))
            self._compiled.append((re.compile("".join(parts)), inside))

    def match(self, path: str) -> bool:
        names = path.split("/")
        for regex, inside in self._compiled:
            if regex is None:
                if not any(n.startswith(".") for n in names):
                    return True
                continue
            # The glob names the file itself, or a folder above it whose contents are not hidden.
            for k in range(1, len(names) + (0 if inside else 1)):
                if regex.fullmatch("/".join(names[:k])) and not any(n.startswith(".") for n in names[k:]):
                    return True
        return False


def upload_order(paths: list[str]) -> list[str]:
    """Files in deeper folders first, then by name: a pointer beside what it names (a trainer's
    `checkpoints/latest`) arrives after it, and a checkpoint's `state.json` after its weights."""
    return sorted(paths, key=lambda p: (-p.count("/"), p))
