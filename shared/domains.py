"""Training domains: `config/domains/<name>.yaml`, what data they name, and whether it is there.

A domain is a named set of text sources the built-in trainer (`agent.training`) learns from:

```yaml
name: sample                 # optional; must equal the file name when given
description: "..."
sources:
  - python_stdlib: true      # the standard library's own .py sources (and .txt docs where present)
  - path: data/notes         # a file, a folder (every text file below it) or a glob (`**` allowed);
                             # `~` is expanded, a relative path is relative to the repo root
  - url: https://...         # needs the network: always reported "unavailable offline", never fetched
holdout_fraction: 0.05       # the last 5 % of the token stream is held out for the eval loss
max_bytes: 1000000           # optional cap on the bytes read, taken in source order
```

Both sides import this module: the coordinator calls `check_domain` before any rank starts and
refuses a job whose domain has no usable data; rank 0 of the trainer reads `resolve_files` in
the same order to build its token stream. Loading never half-succeeds: a bad file raises
`ConfigError` naming the file and the field.

File order is deterministic: sources in the order written, each source's files sorted by their
POSIX path, a file named by two sources counted once (where it first appears). Folder and glob
matches skip hidden entries (a path part starting with "."), `__pycache__`, empty files and
binary files (a NUL byte in the first KiB); a file named directly is taken as it is.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import sysconfig
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

import shared
from shared.cluster_config import ConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
REPO_ROOT = Path(shared.__file__).resolve().parent.parent
SNIFF_BYTES = 1024
_GLOB_CHARS = set("*?[")

SourceKind = Literal["path", "python_stdlib", "url"]
SourceState = Literal["available", "missing", "unavailable offline"]

__all__ = [
    "ConfigError", "Domain", "DomainReport", "Source", "SourceStatus", "check_domain", "domains_dir",
    "list_domains", "load_domain", "resolve_files", "usable_files", "validate_all",
]


class Source(BaseModel):
    """One source of a domain: exactly one of `path`, `python_stdlib: true` or `url`."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, min_length=1, max_length=4096)
    python_stdlib: bool | None = None
    url: str | None = Field(None, min_length=1, max_length=4096)
    note: str | None = Field(None, max_length=1000, description="free text: what this source is")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Source":
        given = [k for k in ("path", "python_stdlib", "url") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of path, python_stdlib or url"
                             + (f" (got {', '.join(given)})" if given else ""))
        if self.python_stdlib is False:
            raise ValueError("python_stdlib must be true (leave the source out instead)")
        if self.url is not None and not re.match(r"^https?://[^\s/]+", self.url):
            raise ValueError(f"url must start with http:// or https:// and a host, got {self.url!r}")
        return self

    @property
    def kind(self) -> SourceKind:
        if self.path is not None:
            return "path"
        return "python_stdlib" if self.python_stdlib else "url"

    @property
    def label(self) -> str:
        if self.path is not None:
            return self.path
        if self.python_stdlib:
            return "Python standard library"
        return str(self.url)


class Domain(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_RE.pattern)
    description: str = Field("", max_length=4000)
    sources: list[Source] = Field(min_length=1, max_length=1000)
    holdout_fraction: float = Field(0.05, gt=0.0, lt=0.5)
    max_bytes: int | None = Field(None, ge=1)

    _file: Path | None = PrivateAttr(None)

    @property
    def file(self) -> Path | None:
        """The YAML file this domain was loaded from (None when built in code)."""
        return self._file


class SourceStatus(BaseModel):
    index: int
    kind: SourceKind
    source: str
    status: SourceState
    files: int = 0
    bytes: int = 0
    detail: str = ""


class DomainReport(BaseModel):
    """What `check_domain` found. `total_bytes` is what training would read (after `max_bytes`);
    `usable` is False when that is zero."""

    name: str
    file: str | None
    sources: list[SourceStatus]
    files: int
    available_bytes: int
    max_bytes: int | None
    total_bytes: int
    usable: bool
    problems: list[str]

    def summary(self) -> str:
        """One line for people and for a 422 detail."""
        if self.usable:
            capped = (f" (capped by max_bytes from {self.available_bytes:,})"
                      if self.total_bytes < self.available_bytes else "")
            return (f"domain {self.name!r}: {self.total_bytes:,} bytes{capped} from {self.files:,} file(s) "
                    f"in {sum(s.status == 'available' for s in self.sources)} of {len(self.sources)} source(s)")
        return f"domain {self.name!r} has no usable data: " + "; ".join(self.problems or ["no sources"])


# --------------------------------------------------------------------------- loading


def _default_domains_dir() -> Path:
    return REPO_ROOT / "config" / "domains"


def domains_dir() -> Path:
    """The bundled domains: `config/domains` under the repo root."""
    return _default_domains_dir()


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"domain name {name!r} is not valid: use 1-64 letters, digits, '_' or '-'")
    return name


def list_domains(directory: Path | str | None = None) -> list[str]:
    """Names of the domain files in `directory` (default `domains_dir()`), sorted."""
    d = Path(directory) if directory is not None else _default_domains_dir()
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.yaml") if p.is_file() and NAME_RE.match(p.stem))


def _where(loc: tuple) -> str:
    return "field " + (".".join(str(p) for p in loc) or "(top level)")


def parse_domain(text: str, name: str, source: str = "domain.yaml") -> Domain:
    """A Domain from YAML text; `name` is the file's stem, which the `name` field must equal."""
    _check_name(name)
    try:
        raw = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if raw is None:
        raise ConfigError(f"{source}: the file is empty; a domain needs at least `sources`")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of settings, got {type(raw).__name__}")
    raw = dict(raw)
    given = raw.setdefault("name", name)
    if given != name:
        raise ConfigError(f"{source}: field name: {given!r} does not match the file name {name!r}")
    try:
        return Domain.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            elif err["type"] == "missing":
                msg = "required field is missing"
            lines.append(f"{source}: {_where(tuple(err['loc']))}: {msg}")
        raise ConfigError("\n".join(lines)) from None


def load_domain(name: str, domains_dir: Path | str | None = None) -> Domain:
    """Load `<domains_dir>/<name>.yaml` (default: the repo's config/domains).

    ConfigError (a ValueError) for a bad name, a missing file or a bad field, naming the file."""
    _check_name(name)
    d = Path(domains_dir) if domains_dir is not None else _default_domains_dir()
    path = d / f"{name}.yaml"
    if not path.is_file():
        known = list_domains(d)
        raise ConfigError(f"no domain {name!r}: {path} does not exist"
                          + (f" (known: {', '.join(known)})" if known else " (no domains there)"))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    domain = parse_domain(text, name, source=str(path))
    domain._file = path
    return domain


# --------------------------------------------------------------------------- files


def _is_text(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return False
    return bool(head) and b"\x00" not in head


def _skipped_part(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__pycache__" for p in parts)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _expand(path: str) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else REPO_ROOT / p


def _tree_files(root: Path, suffixes: tuple[str, ...] | None = None,
                exclude: tuple[str, ...] = ()) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not _skipped_part((d,)) and d not in exclude]
        for fn in filenames:
            if fn.startswith(".") or (suffixes and not fn.endswith(suffixes)):
                continue
            out.append(Path(dirpath) / fn)
    return out


def _stdlib_roots() -> list[tuple[Path, tuple[str, ...]]]:
    """(folder, suffixes) holding the standard library's text on this Python."""
    roots: list[tuple[Path, tuple[str, ...]]] = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    if stdlib.is_dir():
        roots.append((stdlib, (".py", ".txt")))
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    docs = [Path(sys.base_prefix) / "share" / "doc" / ver, Path(sys.base_prefix) / "Doc"]
    if Path(sys.base_prefix) == Path("/usr"):  # a distribution's Python keeps its docs there
        docs.append(Path("/usr/share/doc") / ver)
    for doc in docs:
        if doc.is_dir():
            roots.append((doc, (".txt", ".rst")))
    return roots


def _source_files(src: Source) -> tuple[list[Path], str]:
    """The candidate files of one source, in order, and a note on how they were found."""
    if src.kind == "url":
        return [], "needs the network; this version never fetches url sources"
    if src.kind == "python_stdlib":
        files: list[Path] = []
        roots = _stdlib_roots()
        for root, suffixes in roots:
            found = _tree_files(root, suffixes, exclude=("site-packages", "dist-packages"))
            files += sorted(found, key=lambda p: p.relative_to(root).as_posix())
        where = ", ".join(str(r) for r, _ in roots) or "no standard library folder found"
        return [f for f in files if _is_text(f)], where
    assert src.path is not None
    text = os.path.expanduser(src.path)
    if _GLOB_CHARS & set(text):
        pattern = str(_expand(src.path))
        found = [Path(p) for p in glob.glob(pattern, recursive=True)]
        found = [p for p in found if p.is_file() and not _skipped_part((p.name,)) and "__pycache__" not in p.parts]
        found = sorted(found, key=lambda p: p.as_posix())
        usable = [p for p in found if _is_text(p)]
        if not found:
            return [], f"{pattern} matches no files"
        note = f"glob {pattern}" + (f" ({len(found) - len(usable)} binary or empty file(s) skipped)"
                                    if len(found) != len(usable) else "")
        return usable, note
    p = _expand(src.path)
    if p.is_file():
        return ([p] if _size(p) > 0 else []), str(p)
    if p.is_dir():
        found = sorted(_tree_files(p), key=lambda f: f.relative_to(p).as_posix())
        usable = [f for f in found if _is_text(f)]
        note = f"folder {p}" + (f" ({len(found) - len(usable)} binary or empty file(s) skipped)"
                                if len(found) != len(usable) else "")
        return usable, note
    return [], f"{p} does not exist"


def _scan(domain: Domain) -> tuple[list[tuple[Path, int]], list[SourceStatus]]:
    seen: set[Path] = set()
    files: list[tuple[Path, int]] = []
    statuses: list[SourceStatus] = []
    for i, src in enumerate(domain.sources):
        found, note = _source_files(src)
        n_files = n_bytes = 0
        for f in found:
            key = f.resolve()
            if key in seen:
                continue
            size = _size(f)
            if size <= 0:
                continue
            seen.add(key)
            files.append((f, size))
            n_files += 1
            n_bytes += size
        if src.kind == "url":
            state: SourceState = "unavailable offline"
        elif n_files:
            state = "available"
        else:
            state = "missing"
        if state == "missing" and not note.endswith(("does not exist", "matches no files")):
            note = (note + ": " if note else "") + "no usable files"
        statuses.append(SourceStatus(index=i, kind=src.kind, source=src.label, status=state,
                                     files=n_files, bytes=n_bytes, detail=note))
    return files, statuses


def usable_files(domain: Domain) -> list[tuple[Path, int]]:
    """(path, size) of every file training would read, in order, before the `max_bytes` cap."""
    return _scan(domain)[0]


def resolve_files(domain: Domain) -> list[Path]:
    """The files of `domain`, in the deterministic order described in the module notes."""
    return [p for p, _ in _scan(domain)[0]]


def check_domain(domain: Domain) -> DomainReport:
    """Per-source status (available / missing / unavailable offline) and the usable byte total.
    Reads at most 1 KiB of each file; nothing is fetched."""
    files, statuses = _scan(domain)
    available = sum(size for _, size in files)
    total = min(available, domain.max_bytes) if domain.max_bytes else available
    problems = []
    for s in statuses:
        if s.status == "missing":
            problems.append(f"source {s.index + 1} ({s.source}) is missing: {s.detail}")
        elif s.status == "unavailable offline":
            problems.append(f"source {s.index + 1} ({s.source}) is unavailable offline: {s.detail}")
    return DomainReport(name=domain.name, file=str(domain.file) if domain.file else None, sources=statuses,
                        files=len(files), available_bytes=available, max_bytes=domain.max_bytes,
                        total_bytes=total, usable=total > 0, problems=problems)


def validate_all(directory: Path | str | None = None) -> dict[str, DomainReport | ConfigError]:
    """Every domain file in `directory`: its report, or the ConfigError loading it raised (for
    `jupiter check`)."""
    d = Path(directory) if directory is not None else _default_domains_dir()
    out: dict[str, DomainReport | ConfigError] = {}
    for name in list_domains(d):
        try:
            out[name] = check_domain(load_domain(name, d))
        except ConfigError as exc:
            out[name] = exc
    return out
