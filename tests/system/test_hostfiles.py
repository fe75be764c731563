"""shared.hostfiles: exact bytes for every format, the refusals, and two end-to-end runs of real MLX
ranks on 127.0.0.1: one started by hand with MLX_RANK + MLX_HOSTFILE, one by the real mlx.launch."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shared import hostfiles as hf
from shared.hostfiles import Slot
from tests.support.harness import free_ports

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
MLX_LAUNCH = VENV_BIN / "mlx.launch"
RUN_TIMEOUT = 90

# --------------------------------------------------------------------------- exact bytes


def test_openmpi_and_mpich_bytes():
    hosts = [("mini-1.local", 2), ("10.0.0.7", 1)]
    assert hf.openmpi(hosts) == "mini-1.local slots=2\n10.0.0.7 slots=1\n"
    assert hf.mpich(hosts) == "mini-1.local:2\n10.0.0.7:1\n"


def test_mlx_bytes():
    text = hf.mlx([("mini-1.local", ["169.254.10.1"]), ("mini-2.local", ["169.254.10.2", "192.168.1.9"])],
                  backend="ring", envs=["MLX_METAL_FAST_SYNCH=1"])
    assert text == (
        '{"backend": "ring", "envs": ["MLX_METAL_FAST_SYNCH=1"], "hosts": ['
        '{"ssh": "mini-1.local", "ips": ["169.254.10.1"]}, '
        '{"ssh": "mini-2.local", "ips": ["169.254.10.2", "192.168.1.9"]}]}\n')
    assert hf.mlx([("a", ["10.0.0.1"])]) == '{"backend": "ring", "envs": [], "hosts": [{"ssh": "a", "ips": ["10.0.0.1"]}]}\n'
    assert json.loads(hf.mlx([("a", [])], backend="mpi"))["hosts"] == [{"ssh": "a", "ips": []}]


SLOTS = [
    Slot("mini-1.local", "169.254.10.1", 5000, 0),
    Slot("mini-1.local", "169.254.10.1", 5001, 1),
    Slot("mini-2.local", "169.254.10.2", 5002, 2),
]


def test_ring_bytes_and_rank_order():
    shuffled = [SLOTS[2], SLOTS[0], SLOTS[1]]
    assert hf.ring(shuffled) == [["169.254.10.1:5000"], ["169.254.10.1:5001"], ["169.254.10.2:5002"]]
    assert hf.ring_json(shuffled) == '[["169.254.10.1:5000"], ["169.254.10.1:5001"], ["169.254.10.2:5002"]]\n'
    # a DNS name is resolved by MLX (getaddrinfo), so it may stand in for an IP
    assert hf.ring([Slot("a", "localhost", 1, 0), Slot("b", "localhost", 2, 1)]) == [["localhost:1"], ["localhost:2"]]


def test_render_dispatches_every_format():
    assert hf.render("openmpi", SLOTS) == "mini-1.local slots=2\nmini-2.local slots=1\n"
    assert hf.render("mpich", SLOTS) == "mini-1.local:2\nmini-2.local:1\n"
    assert hf.render("ring", SLOTS) == hf.ring_json(SLOTS)
    assert hf.render("mlx", SLOTS, backend="ring", envs=["A=1"]) == (
        '{"backend": "ring", "envs": ["A=1"], "hosts": ['
        '{"ssh": "mini-1.local", "ips": ["169.254.10.1"]}, '
        '{"ssh": "mini-1.local", "ips": ["169.254.10.1"]}, '
        '{"ssh": "mini-2.local", "ips": ["169.254.10.2"]}]}\n')
    with pytest.raises(ValueError, match="'slurm'"):
        hf.render("slurm", SLOTS)


def test_group_hosts_merges_contiguous_ranks_and_refuses_interleaving():
    assert hf.group_hosts(SLOTS) == [("mini-1.local", 2), ("mini-2.local", 1)]
    assert hf.group_hosts([SLOTS[2], SLOTS[1], SLOTS[0]]) == [("mini-1.local", 2), ("mini-2.local", 1)]
    interleaved = [Slot("a", "10.0.0.1", 5000, 0), Slot("b", "10.0.0.2", 5000, 1), Slot("a", "10.0.0.1", 5001, 2)]
    with pytest.raises(ValueError, match="not contiguous"):
        hf.group_hosts(interleaved)
    with pytest.raises(ValueError, match="not contiguous"):
        hf.render("openmpi", interleaved)
    assert hf.render("ring", interleaved)  # the ring backend does not care where ranks sit
    with pytest.raises(ValueError, match="appears twice"):
        hf.openmpi([("a", 1), ("b", 1), ("a", 1)])


def test_starting_port_matches_mlx_launch_numbering():
    assert hf.starting_port(SLOTS) == 5000
    with pytest.raises(ValueError, match="consecutive"):
        hf.starting_port([Slot("a", "10.0.0.1", 5000, 0), Slot("b", "10.0.0.2", 5000, 1)])


@pytest.mark.parametrize("bad", ["a;reboot", "a b", "$(id)", "-oProxyCommand=x", "a\nb", "", "a..b", "host:22", "[::1]"])
def test_unsafe_hosts_and_addresses_are_refused(bad):
    with pytest.raises(ValueError):
        Slot(bad, "10.0.0.1", 5000, 0)
    with pytest.raises(ValueError):
        Slot("a", bad, 5000, 0)
    with pytest.raises(ValueError):
        hf.openmpi([(bad, 1)])
    with pytest.raises(ValueError):
        hf.mpich([(bad, 1)])
    with pytest.raises(ValueError):
        hf.mlx([(bad, ["10.0.0.1"])])
    with pytest.raises(ValueError):
        hf.mlx([("a", [bad])])


@pytest.mark.parametrize("port", [0, 65536, -1, True, 5000.0, "5000"])
def test_bad_ports_are_refused(port):
    with pytest.raises(ValueError, match="port"):
        Slot("a", "10.0.0.1", port, 0)


def test_other_refusals():
    with pytest.raises(ValueError, match="IPv6"):
        hf.ring([Slot("a", "fe80::1", 5000, 0), Slot("b", "fe80::2", 5000, 1)])
    with pytest.raises(ValueError, match="IPv6"):
        hf.mlx([("a", ["::1"])], backend="ring")
    assert hf.openmpi([("fe80::1", 1)]) == "fe80::1 slots=1\n"  # Open MPI reads the token whole
    with pytest.raises(ValueError, match="':'"):
        hf.mpich([("fe80::1", 1)])
    with pytest.raises(ValueError, match="one rank"):
        hf.ring([Slot("a", "10.0.0.1", 5000, 0)])
    with pytest.raises(ValueError, match="both use"):
        hf.ring([Slot("a", "10.0.0.1", 5000, 0), Slot("a", "10.0.0.1", 5000, 1)])
    with pytest.raises(ValueError, match="ranks must be"):
        hf.ring([Slot("a", "10.0.0.1", 5000, 0), Slot("b", "10.0.0.2", 5000, 2)])
    with pytest.raises(ValueError, match="ranks must be"):
        hf.ring([Slot("a", "10.0.0.1", 5000, 1), Slot("b", "10.0.0.2", 5000, 1)])
    with pytest.raises(ValueError, match="no ranks"):
        hf.render("ring", [])
    with pytest.raises(ValueError, match="no hosts"):
        hf.openmpi([])
    with pytest.raises(ValueError, match="slot count"):
        hf.openmpi([("a", 0)])
    with pytest.raises(ValueError, match="backend"):
        hf.mlx([("a", ["10.0.0.1"])], backend="tcp")
    with pytest.raises(ValueError, match="needs one"):
        hf.mlx([("a", [])], backend="ring")
    for env in ["NOEQUALS", "BAD-KEY=1", "A=line\nbreak", "=1"]:
        with pytest.raises(ValueError, match="env"):
            hf.mlx([("a", ["10.0.0.1"])], envs=[env])
    with pytest.raises(ValueError, match="rank"):
        Slot("a", "10.0.0.1", 5000, -1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SLOTS[0].port = 1  # type: ignore[misc]


# --------------------------------------------------------------------------- end to end with real MLX

RANK_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import mlx.core as mx
    g = mx.distributed.init(backend="ring", strict=True)
    x = mx.distributed.all_sum(mx.array([float(g.rank() + 1), 10.0 * (g.rank() + 1)]))
    mx.eval(x)
    print("RESULT " + json.dumps({"rank": g.rank(), "size": g.size(), "sum": x.tolist(),
          "hostfile": open(os.environ["MLX_HOSTFILE"]).read()}), flush=True)
""")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLX_", "OMPI_", "PMIX_", "PRTE_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_consecutive_ports(n: int) -> int:
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000 - n)
        if all(_port_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free port range on 127.0.0.1")



def _kill_group(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _results(text: str) -> dict[int, dict]:
    out = {}
    for line in text.splitlines():
        if line.startswith("RESULT "):
            rec = json.loads(line[len("RESULT "):])
            out[rec["rank"]] = rec
    return out


def test_ring_hostfile_runs_two_real_mlx_ranks(tmp_path):
    a, b = free_ports(2)
    slots = [Slot("127.0.0.1", "127.0.0.1", a, 0), Slot("127.0.0.1", "127.0.0.1", b, 1)]
    hostfile = tmp_path / "ring.json"
    hostfile.write_text(hf.render("ring", slots))
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)

    procs = []
    try:
        for rank in (0, 1):
            env = _clean_env() | {"MLX_RANK": str(rank), "MLX_HOSTFILE": str(hostfile)}
            procs.append(subprocess.Popen([PYTHON, str(script)], env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          start_new_session=True))
        outputs = []
        for p in procs:
            out, err = p.communicate(timeout=RUN_TIMEOUT)
            outputs.append((p.returncode, out, err))
    finally:
        for p in procs:
            _kill_group(p)

    for rank, (rc, out, err) in enumerate(outputs):
        assert rc == 0, f"rank {rank} exited {rc}:\n{err}"
        rec = _results(out)[rank]
        assert rec["size"] == 2 and rec["sum"] == [3.0, 30.0]


def test_mlx_hostfile_runs_under_the_real_mlx_launch(tmp_path):
    if not MLX_LAUNCH.exists():
        pytest.skip("mlx.launch is not installed in .venv")
    base = _free_consecutive_ports(2)
    slots = [Slot("127.0.0.1", "127.0.0.1", base, 0), Slot("127.0.0.1", "127.0.0.1", base + 1, 1)]
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(hf.render("mlx", slots, backend="ring", envs=["JUPITER_TEST_ENV=hello world"]))
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT + 'print("ENV", os.environ.get("JUPITER_TEST_ENV"), flush=True)\n')

    out_path, err_path = tmp_path / "launch.out", tmp_path / "launch.err"
    # mlx.launch polls its stdin with select(): an idle pipe (not /dev/null, which is always
    # readable) keeps it from spinning. Its mktemp files (pid files, MLX_HOSTFILE copies) are never
    # removed, so TMPDIR points them into tmp_path.
    rfd, wfd = os.pipe()
    env = _clean_env() | {"TMPDIR": str(tmp_path)}
    cmd = [str(MLX_LAUNCH), "--hostfile", str(hostfile), "--backend", "ring",
           "--starting-port", str(hf.starting_port(slots)), "--", PYTHON, str(script)]
    with open(out_path, "w") as out_f, open(err_path, "w") as err_f:
        p = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdin=rfd, stdout=out_f, stderr=err_f,
                             start_new_session=True)
    os.close(rfd)
    try:
        p.wait(timeout=RUN_TIMEOUT)
    finally:
        os.close(wfd)
        _kill_group(p)
    out, err = out_path.read_text(), err_path.read_text()

    assert p.returncode == 0, err
    results = _results(out)
    assert sorted(results) == [0, 1], f"stdout:\n{out}\nstderr:\n{err}"
    for rec in results.values():
        assert rec["size"] == 2 and rec["sum"] == [3.0, 30.0]
        # the MLX_HOSTFILE mlx.launch wrote for the ranks is our ring format, byte for byte
        # (mlx.launch writes it with `echo`, which adds the newline ours ends with)
        assert rec["hostfile"] == hf.render("ring", slots)
    assert out.count("ENV hello world") == 2


def test_mlx_launch_exits_zero_even_when_every_rank_fails(tmp_path):
    """Not ours, but the launcher must know: mlx.launch's exit status says nothing about the ranks."""
    if not MLX_LAUNCH.exists():
        pytest.skip("mlx.launch is not installed in .venv")
    base = _free_consecutive_ports(2)
    slots = [Slot("127.0.0.1", "127.0.0.1", base, 0), Slot("127.0.0.1", "127.0.0.1", base + 1, 1)]
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(hf.render("mlx", slots))
    rfd, wfd = os.pipe()
    p = subprocess.Popen([str(MLX_LAUNCH), "--hostfile", str(hostfile), "--starting-port", str(base), "--",
                          PYTHON, "-c", "import sys; sys.exit(3)"],
                         env=_clean_env() | {"TMPDIR": str(tmp_path)}, cwd=tmp_path, stdin=rfd,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    os.close(rfd)
    try:
        out, err = p.communicate(timeout=RUN_TIMEOUT)
    finally:
        os.close(wfd)
        _kill_group(p)
    assert p.returncode == 0
    assert "exited with code 3" in err
