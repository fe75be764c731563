"""config/cluster.yaml: the seed's schema loads; broken files name file, node and field;
declared nodes show up and are checked against what agents report."""

from __future__ import annotations

import textwrap

import httpx
import pytest

from shared.cluster_config import ConfigError, load_cluster_config, parse_cluster_config
from tests.support.harness import REPO, sample_facts, registration

NODE = dict(host="mini.local", name="Mini", device_type="mac", memory_gb=24, chip="M4", role="trainer")


def test_the_seed_cluster_yaml_loads_with_every_field():
    cfg = load_cluster_config(REPO / "config" / "cluster.yaml")
    assert cfg.backend == "mpi" and cfg.use_thunderbolt_bridge is True
    assert cfg.sync_every_n_steps == 1 and cfg.nodes[0].name == "Main MacBook"
    main = cfg.nodes[0]
    assert (main.role, main.connection_type, main.ssh_port, main.can_train) == ("generator", "thunderbolt", 22, False)


def _yaml(**over):
    node = dict(NODE, **over)
    body = "\n".join(f"    {k}: {v!r}" if isinstance(v, str) else f"    {k}: {v}" for k, v in node.items())
    return "backend: ring\nnodes:\n  -\n" + body.replace("    ", "    ", 1) + "\n"


@pytest.mark.parametrize("text, expected", [
    ("backend: tcp\n", "field backend"),
    ("nodes:\n  - {host: a.local, name: A, device_type: tpu, role: trainer}\n", 'node "A" (nodes[0]), field device_type'),
    ("nodes:\n  - {host: a.local, name: A, device_type: mac, role: boss}\n", 'node "A" (nodes[0]), field role'),
    ("nodes:\n  - {host: a.local, name: A, role: trainer}\n", 'field device_type: required field is missing'),
    ("nodes:\n  - {host: a.local, name: A, device_type: mac, role: trainer, colour: red}\n", "field colour: unknown field"),
    ("nodes:\n  - {host: a.local, name: A, device_type: mac, role: trainer}\n"
     "  - {host: A.local, name: B, device_type: mac, role: trainer}\n", 'node "B" (nodes[1]), field host: duplicate host'),
    ("nodes:\n  - {host: 'a.local; reboot', name: A, device_type: mac, role: trainer}\n", "field host"),
    ("nodes: [\n", "not valid YAML"),
    ("- just\n- a list\n", "top level must be a mapping"),
    ("sync_every_n_steps: 0\n", "field sync_every_n_steps"),
])
def test_broken_files_name_the_file_node_and_field(text, expected):
    with pytest.raises(ConfigError) as e:
        parse_cluster_config(text, "broken.yaml")
    assert "broken.yaml" in str(e.value) and expected in str(e.value)


def test_a_broken_config_stops_the_coordinator_with_the_reason(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "cluster.yaml"
    bad.write_text("nodes:\n  - {host: a.local, name: A, device_type: tpu, role: trainer}\n")
    out = subprocess.run([sys.executable, "-m", "shared.cli", "coordinator", "--config", str(bad), "--port", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={"JUPITER_HOME": str(tmp_path / "h"), "PATH": "/usr/bin:/bin"})
    assert out.returncode != 0
    assert f'{bad}: node "A" (nodes[0]), field device_type' in out.stderr


def test_declared_nodes_are_down_until_their_agent_registers_and_contradictions_are_problems(start_coordinator, tmp_path):
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(textwrap.dedent("""\
        backend: ring
        nodes:
          - {host: mini.local, name: Mini, device_type: mac, memory_gb: 64, chip: M4 Pro, role: trainer}
          - {host: studio.local, name: Studio, device_type: mac, memory_gb: 128, chip: M3 Ultra, role: hybrid}
        """))
    coord = start_coordinator(config=cfg)
    with coord.client() as c:
        nodes = {n.name: n for n in c.nodes()}
        assert {n.status for n in nodes.values()} == {"down"}
        assert nodes["Mini"].declared.memory_gb == 64
    # An agent on mini.local registers under another name: matched by host, it takes the declared entry.
    r = httpx.post(coord.url + "/nodes/register", headers={"Authorization": f"Bearer {coord.join_token}"},
                   json=registration("mac-mini", "mini.local",
                                     sample_facts("m1", chip="Apple M4", memory_gb=24, device_type="mac")))
    assert r.status_code == 200
    with coord.client() as c:
        nodes = {n.name: n for n in c.nodes()}
        assert set(nodes) == {"mac-mini", "Studio"}
        mini = nodes["mac-mini"]
        assert mini.id == r.json()["node_id"] and mini.status == "ready" and mini.role == "trainer"
        assert any("declared memory_gb 64" in p for p in mini.problems)
        assert any("declared chip 'M4 Pro'" in p for p in mini.problems)
        assert any("its agent has never reported" in p and "(fix: install and start the agent" in p
                   for p in nodes["Studio"].problems)
        summary = c.cluster()
        assert any(p.startswith("mac-mini: declared memory_gb") for p in summary.problems)


def test_backend_mpi_problems_name_mpich_nodes_and_the_ssh_requirement(start_coordinator, tmp_path):
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text("backend: mpi\nnodes: []\n")
    coord = start_coordinator(config=cfg)
    for name, host, mpi in (("m1", "mini-1.local", {"implementation": "openmpi", "version": "5.0.11"}),
                            ("m2", "mini-2.local", {"implementation": "mpich", "version": "4.2.0"})):
        r = httpx.post(coord.url + "/nodes/register", headers={"Authorization": f"Bearer {coord.join_token}"},
                       json=registration(name, host, sample_facts(f"id-{name}", mpi=mpi)))
        assert r.status_code == 200
    with coord.client() as c:
        problems = c.cluster().problems
    assert any(p.startswith("m2: has MPICH 4.2.0; MLX's MPI backend loads only Open MPI") for p in problems)
    assert not any(p.startswith("m1:") and "MPI" in p for p in problems), problems
    assert any("passwordless SSH" in p for p in problems)
    with coord.client() as c:
        issues = {(i.node, i.kind): i for i in c.cluster().issues}
    assert "open-mpi" in issues[("m2", "mpich")].fix
    assert issues[(None, "ssh")].fix.startswith("ssh-copy-id")
