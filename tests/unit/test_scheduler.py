"""Placement rules over node views: eligibility, waiting reasons, rank order along cables,
rank addresses (Thunderbolt bridge, forced interface) and ports."""

from __future__ import annotations

from coordinator.scheduler import Placement, Unplaceable, pick_ports, place, reservation
from shared.cluster_config import ClusterConfig
from shared.schemas import JobSpec, MPIInfo, NetInterface, NodeOut, ThunderboltInfo


def node(name, *, status="ready", role="trainer", mem=64.0, mpi="openmpi", uuid=None, peers=(), bridge_ip=None,
         host=None):
    tb = {"domain_uuids": [uuid] if uuid else [],
          "ports": [{"port": i + 1, "status": "connected", "speed_gbps": 40.0, "peer_uuid": p}
                    for i, p in enumerate(peers)]}
    if bridge_ip:
        tb["bridge"] = {"interface": "bridge0", "ips": [bridge_ip], "up": True, "members": ["en2"]}
    return NodeOut(id=f"n-{name}", name=name, host=host or f"{name}.local", status=status, role=role,
                   device_type="mac", chip="Apple M4", memory_gb=mem, memory_available_gb=mem / 2, cpu_cores=10,
                   os_version="macOS 15.1", python_version="3.11.7", mlx_version="0.32.4", mlx_device="gpu",
                   mpi=MPIInfo(implementation=mpi, version="5"), thunderbolt=ThunderboltInfo.model_validate(tb),
                   declared=None, problems=[], last_heartbeat=None, registered_at=None, agent_version="0.1.0")


CFG = ClusterConfig(use_thunderbolt_bridge=True)


def spec(**kw):
    return JobSpec(command=["python", "train.py"], **kw)


def test_picks_eligible_nodes_and_explains_waiting():
    nodes = [node("a"), node("b", status="down"), node("c", status="draining"), node("d", role="evaluator"),
             node("e", mem=16)]
    got = place(spec(nodes=1, roles=["trainer"], min_memory_gb=32), "ring", nodes, CFG, set(), {})
    assert isinstance(got, Placement) and [n.name for n in got.nodes] == ["a"]
    got = place(spec(nodes=2, roles=["trainer"], min_memory_gb=32), "ring", nodes, CFG, set(), {})
    assert isinstance(got, Unplaceable)
    assert "needs 2 node(s), 1 eligible of 5" in got.reason
    for why in ("b: down", "c: draining", "d: role evaluator", "e: 16 GB < 32 GB"):
        assert why in got.reason


def test_busy_nodes_and_named_nodes():
    nodes = [node("a"), node("b")]
    got = place(spec(nodes=2), "ring", nodes, CFG, {"n-a"}, {})
    assert isinstance(got, Unplaceable) and "a: busy" in got.reason
    got = place(spec(node_names=["b", "a"]), "ring", nodes, CFG, set(), {})
    assert [n.name for n in got.nodes] == ["b", "a"]  # the order asked for is the rank order
    got = place(spec(node_names=["b", "a"]), "ring", nodes, CFG, {"n-a"}, {})
    assert isinstance(got, Unplaceable) and got.reason == "waiting for a (busy)"


def test_mpi_needs_open_mpi():
    nodes = [node("a"), node("b", mpi="mpich")]
    got = place(spec(nodes=2), "mpi", nodes, CFG, set(), {})
    assert isinstance(got, Unplaceable) and "b: no Open MPI" in got.reason
    assert isinstance(place(spec(nodes=2), "ring", nodes, CFG, set(), {}), Placement)


def test_rank_order_follows_the_thunderbolt_daisy_chain():
    # Cables: m2 - m5 - m1 - m4 - m3 (names deliberately out of cable order).
    chain = {"m2": ["U5"], "m5": ["U2", "U1"], "m1": ["U5", "U4"], "m4": ["U1", "U3"], "m3": ["U4"]}
    nodes = [node(n, uuid="U" + n[1], peers=p) for n, p in chain.items()]
    got = place(spec(nodes=5), "ring", nodes, CFG, set(), {})
    order = [n.name for n in got.nodes]
    assert order in (["m2", "m5", "m1", "m4", "m3"], ["m3", "m4", "m1", "m5", "m2"])
    # Without cables the order is simply by name.
    plain = place(spec(nodes=3), "ring", [node("c"), node("a"), node("b")], CFG, set(), {})
    assert [n.name for n in plain.nodes] == ["a", "b", "c"]


def test_rank_addresses_prefer_the_bridge_or_a_forced_interface():
    nodes = [node("a", bridge_ip="169.254.1.1"), node("b")]
    got = place(spec(nodes=2), "ring", nodes, CFG, set(), {})
    assert got.addresses == ["169.254.1.1", "b.local"]
    off = ClusterConfig(use_thunderbolt_bridge=False)
    assert place(spec(nodes=2), "ring", nodes, off, set(), {}).addresses == ["a.local", "b.local"]
    forced = ClusterConfig(network_interface="en5")
    ifaces = {"n-a": [NetInterface(name="en5", up=True, ips=["fe80::1", "10.9.0.1"])],
              "n-b": [NetInterface(name="en0", up=True, ips=["10.0.0.2"])]}
    got = place(spec(nodes=2), "ring", nodes, forced, set(), ifaces)
    assert isinstance(got, Unplaceable) and "b has no up interface 'en5'" in got.reason
    assert place(spec(nodes=1), "ring", nodes, forced, set(), ifaces).addresses == ["10.9.0.1"]


def test_ports_are_unique_per_address_among_active_jobs():
    import random

    class Fixed(random.Random):
        def randrange(self, n):
            return 0

    in_use = {("10.0.0.1", 20000)}
    ports = pick_ports(["10.0.0.1", "10.0.0.2"], 2, in_use, rng=Fixed())
    assert ports == [[20001, 20002], [20000, 20001]]
    assert ("10.0.0.1", 20002) in in_use
    # Jobs start at a random point of the range, so two coordinators rarely collide.
    starts = {pick_ports(["10.0.0.9"], 1, set())[0][0] for _ in range(20)}
    assert len(starts) > 10 and all(20000 <= p < 32000 for p in starts)


def test_fixture_clusters_place_ranks_along_cables_at_per_cable_addresses():
    from coordinator import topology
    from tests.unit.test_topology import load

    nodes, ifaces = load("ring4")
    got = place(spec(nodes=4), "ring", nodes, CFG, set(), ifaces)
    assert isinstance(got, Placement)
    topo = topology.build(nodes, ifaces)
    ids = [n.id for n in got.nodes]
    for j in range(4):  # every ring neighbour pair, the closing one included, shares a cable
        assert topo.links_between(ids[j - 1], ids[j]), (ids[j - 1], ids[j])
    for j, addr in enumerate(got.addresses):  # rank j listens on its end of the cable from rank j-1
        la = topology.link_addresses(topo, ids[j - 1], ids[j])
        assert addr in la.b.ips and addr != got.nodes[j].host
    chain, chain_ifaces = load("chain5")
    got = place(spec(nodes=5), "ring", chain, CFG, set(), chain_ifaces)
    names = [n.name for n in got.nodes]
    assert names in (["Mac mini 3", "Mac mini 2", "Mac Studio", "Mac mini 1", "Main MacBook"],
                     ["Main MacBook", "Mac mini 1", "Mac Studio", "Mac mini 2", "Mac mini 3"])
    assert all(a.startswith("169.254.") for a in got.addresses)  # bridge0 addresses


def test_mpi_ssh_config_carries_cluster_yaml_ssh_user_and_port(tmp_path):
    from coordinator.launchers.mpi import ssh_config

    assert ssh_config({"n-a": ("a.local", None, 22)}, tmp_path / "c1") is None
    path = ssh_config({"n-a": ("a.local", "admin", 2222), "n-b": ("b.local", None, 22)}, tmp_path / "c2")
    text = path.read_text()
    assert "Host a.local\n  User admin\n  Port 2222\n" in text and "b.local" not in text
    assert text.rstrip().endswith(".ssh/config")


def test_a_restart_keeps_rank_0_where_the_checkpoints_are():
    nodes = [node("a"), node("b"), node("c")]
    got = place(spec(nodes=2), "ring", nodes, CFG, set(), {}, prefer_rank0="n-c")
    assert got.nodes[0].name == "c" and len(got.nodes) == 2
    got = place(spec(nodes=2), "ring", nodes, CFG, {"n-c"}, {}, prefer_rank0="n-c")  # c busy: elsewhere
    assert [n.name for n in got.nodes] == ["a", "b"]


def test_a_job_waiting_for_busy_nodes_holds_what_it_could_use_and_no_more():
    nodes = [node("a", status="busy"), node("b"), node("c", role="evaluator"), node("d", status="down")]
    wide = spec(nodes=2, roles=["trainer"])
    assert isinstance(place(wide, "ring", nodes, CFG, set(), {}), Unplaceable)
    held = reservation(wide, "ring", nodes, CFG, {})
    assert held == {"n-a", "n-b"}  # not the evaluator, not the down node
    # A younger 1-node trainer job cannot take b; an evaluator job can still use c.
    assert isinstance(place(spec(nodes=1, roles=["trainer"]), "ring", nodes, CFG, held, {}), Unplaceable)
    got = place(spec(nodes=1, roles=["evaluator"]), "ring", nodes, CFG, held, {})
    assert isinstance(got, Placement) and [n.name for n in got.nodes] == ["c"]
    # A job that would not fit even with every node idle holds nothing: it must not stall others.
    assert reservation(spec(nodes=3, roles=["trainer"]), "ring", nodes, CFG, {}) == set()
    assert reservation(spec(node_names=["a"]), "ring", nodes, CFG, {}) == {"n-a"}


def test_finetune_ranks_go_only_to_nodes_with_mlx_lm():
    ft = JobSpec(finetune={"model": "m", "data": "d", "iters": 5, "batch_size": 2}, nodes=2)
    nodes = [node("a").model_copy(update={"mlx_lm_version": "0.32.2"}), node("b")]
    got = place(ft, "ring", nodes, CFG, set(), {})
    assert isinstance(got, Unplaceable) and "b: no mlx-lm for its rank Python" in got.reason
    nodes[1] = nodes[1].model_copy(update={"mlx_lm_version": "0.32.2"})
    assert isinstance(place(ft, "ring", nodes, CFG, set(), {}), Placement)
    assert isinstance(place(spec(nodes=2), "ring", [node("a"), node("b")], CFG, set(), {}), Placement)
