"""shared.domains: the bundled domains, honest availability reports, refusals naming file and field."""

from __future__ import annotations

import socket
import textwrap

import pytest

from shared import domains as dm
from shared.domains import ConfigError, check_domain, list_domains, load_domain, resolve_files


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: url sources must never be fetched."""
    def refuse(*a, **k):
        raise AssertionError("check_domain tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def write(d, name, text):
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.yaml").write_text(textwrap.dedent(text))
    return d


# --------------------------------------------------------------------------- bundled domains


def test_bundled_domains_are_listed():
    names = list_domains()
    assert "sample" in names and "unreal_engine" in names
    assert dm.domains_dir() == dm.REPO_ROOT / "config" / "domains"


def test_sample_is_available_capped_and_deterministic(no_network):
    d = load_domain("sample")
    assert d.name == "sample" and d.file == dm.domains_dir() / "sample.yaml"
    report = check_domain(d)
    assert report.usable and report.total_bytes > 0
    assert report.total_bytes == min(report.available_bytes, d.max_bytes)
    assert d.max_bytes and d.max_bytes <= 4_000_000  # quick to tokenise
    assert [s.status for s in report.sources] == ["available"]
    assert report.sources[0].kind == "python_stdlib" and report.sources[0].files > 10
    files = resolve_files(d)
    assert files == resolve_files(d) and len(files) == report.files
    assert all(f.is_file() for f in files[:50])
    assert not any("site-packages" in f.parts or "__pycache__" in f.parts for f in files)
    assert "sample" in report.summary() and "bytes" in report.summary()


def test_unreal_engine_is_reported_unavailable_offline(no_network):
    d = load_domain("unreal_engine")
    report = check_domain(d)
    assert not report.usable and report.total_bytes == 0
    kinds = {s.kind: s.status for s in report.sources}
    assert kinds["url"] == "unavailable offline"
    assert all(s.status == "unavailable offline" for s in report.sources if s.kind == "url")
    assert all(s.status == "missing" for s in report.sources if s.kind == "path")  # no checkout here
    assert any("docs.unrealengine.com" in s.source for s in report.sources)
    assert any(s.source.startswith("~/UnrealEngine/") for s in report.sources)
    line = report.summary()
    assert "\n" not in line and "'unreal_engine' has no usable data" in line and "unavailable offline" in line
    assert resolve_files(d) == []


def test_validate_all_covers_every_file(tmp_path):
    write(tmp_path, "good", "sources: [{python_stdlib: true}]\nmax_bytes: 10\n")
    write(tmp_path, "bad", "sources: []\n")
    out = dm.validate_all(tmp_path)
    assert out["good"].usable and out["good"].total_bytes == 10
    assert isinstance(out["bad"], ConfigError)


# --------------------------------------------------------------------------- names and files refused


@pytest.mark.parametrize("name", ["../sample", "a/b", "", "x" * 65, "sample.yaml", "a b", "..", "~root", "é"])
def test_bad_names_are_refused(name, tmp_path):
    with pytest.raises(ConfigError, match="not valid"):
        load_domain(name, tmp_path)


def test_unknown_domain_names_the_file_and_the_known_ones(tmp_path):
    write(tmp_path, "other", "sources: [{python_stdlib: true}]\n")
    with pytest.raises(ConfigError) as e:
        load_domain("nope", tmp_path)
    assert str(tmp_path / "nope.yaml") in str(e.value) and "other" in str(e.value)


@pytest.mark.parametrize("text, field, words", [
    ("sources: [{path: a, url: 'https://x.org'}]\n", "sources.0", "exactly one"),
    ("sources: [{}]\n", "sources.0", "exactly one"),
    ("sources: [{python_stdlib: false}]\n", "sources.0", "must be true"),
    ("sources: [{url: 'ftp://x.org/a'}]\n", "sources.0", "http"),
    ("sources: [{path: a, colour: red}]\n", "sources.0.colour", "unknown field"),
    ("sources: []\n", "sources", "at least 1"),
    ("description: x\n", "sources", "required field is missing"),
    ("sources: [{path: a}]\nholdout_fraction: 0.7\n", "holdout_fraction", "less than 0.5"),
    ("sources: [{path: a}]\nholdout_fraction: 0\n", "holdout_fraction", "greater than 0"),
    ("sources: [{path: a}]\nmax_bytes: 0\n", "max_bytes", "greater than or equal to 1"),
    ("sources: [{path: a}]\nname: other\n", "name", "does not match"),
    ("sources: [{path: a}]\nextra: 1\n", "extra", "unknown field"),
])
def test_bad_fields_name_the_file_and_the_field(tmp_path, text, field, words):
    write(tmp_path, "d", text)
    with pytest.raises(ConfigError) as e:
        load_domain("d", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "d.yaml") in msg, msg
    assert f"field {field}" in msg and words in msg, msg


@pytest.mark.parametrize("text, words", [("sources: [a\n", "not valid YAML"), ("- a\n- b\n", "mapping"),
                                         ("", "empty"), ("# nothing\n", "empty")])
def test_unreadable_files_are_refused(tmp_path, text, words):
    write(tmp_path, "d", text)
    with pytest.raises(ConfigError, match=words):
        load_domain("d", tmp_path)


# --------------------------------------------------------------------------- sources


def test_path_sources_folder_glob_file_order_and_filters(tmp_path, no_network):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / ".git").mkdir()
    (data / "b.txt").write_text("bbbb")
    (data / "a.txt").write_text("aa")
    (data / "sub" / "c.md").write_text("ccc")
    (data / ".git" / "HEAD").write_text("ref")          # hidden: skipped
    (data / "blob.bin").write_bytes(b"\x00\x01\x02")     # binary: skipped
    (data / "empty.txt").write_text("")                  # empty: skipped
    single = tmp_path / "one.log"
    single.write_text("12345")
    write(tmp_path / "domains", "d", f"""
        sources:
          - path: {data}
          - path: {data}/**/*.md
          - path: {single}
          - path: {tmp_path}/nothing-here
          - path: {tmp_path}/*.none
          - url: https://example.org/docs
        """)
    d = load_domain("d", tmp_path / "domains")
    files = resolve_files(d)
    assert files == [data / "a.txt", data / "b.txt", data / "sub" / "c.md", single]  # c.md counted once
    r = check_domain(d)
    assert [s.status for s in r.sources] == ["available", "missing", "available", "missing", "missing",
                                             "unavailable offline"]
    assert r.sources[0].files == 3 and r.sources[0].bytes == 9
    assert "binary or empty" in r.sources[0].detail
    assert "does not exist" in r.sources[3].detail and "matches no files" in r.sources[4].detail
    assert r.usable and r.total_bytes == 14 and r.files == 4
    assert len(r.problems) == 4


def test_max_bytes_caps_the_total(tmp_path):
    (tmp_path / "t.txt").write_text("x" * 1000)
    write(tmp_path, "d", f"sources: [{{path: {tmp_path}/t.txt}}]\nmax_bytes: 100\n")
    r = check_domain(load_domain("d", tmp_path))
    assert r.available_bytes == 1000 and r.total_bytes == 100 and "capped" in r.summary()


def test_relative_paths_are_relative_to_the_repo_and_tilde_is_expanded(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "corpus").mkdir(parents=True)
    (home / "corpus" / "x.txt").write_text("hello")
    monkeypatch.setenv("HOME", str(home))
    write(tmp_path, "d", "sources:\n  - path: config/domains/sample.yaml\n  - path: ~/corpus\n")
    files = resolve_files(load_domain("d", tmp_path))
    assert files == [dm.REPO_ROOT / "config" / "domains" / "sample.yaml", home / "corpus" / "x.txt"]


def test_a_domain_with_only_missing_sources_is_unusable_before_anything_starts(tmp_path, no_network):
    write(tmp_path, "gone", f"sources: [{{path: {tmp_path}/absent}}, {{url: 'https://example.org'}}]\n")
    r = check_domain(load_domain("gone", tmp_path))
    assert not r.usable
    assert r.summary().startswith("domain 'gone' has no usable data: ")
    assert r.model_dump()["sources"][1]["status"] == "unavailable offline"  # JSON-ready for a 422
