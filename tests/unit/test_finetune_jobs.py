"""Finetune jobs in-process: the spec, the command every rank runs, and where a restart resumes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent import finetune
from coordinator import finetune_jobs
from coordinator.jobs.spec import SpecRejected, check, command_of, spec_hash, stored
from shared.cluster_config import ClusterConfig
from shared.schemas import JobSpec

FT = {"model": "model", "data": "data", "iters": 30, "batch_size": 4}


def spec(**kw) -> JobSpec:
    return JobSpec.model_validate({"name": "ft", "nodes": 2, "finetune": dict(FT, **kw.pop("ft", {})), **kw})


def test_a_finetune_job_is_one_kind_of_job_among_command_and_domain():
    with pytest.raises(ValidationError, match="exactly one of"):
        JobSpec.model_validate({"command": ["x"], "finetune": FT})
    with pytest.raises(ValidationError, match="exactly one of"):
        JobSpec.model_validate({"domain": "sample", "finetune": FT})
    assert spec().finetune.iters == 30


@pytest.mark.parametrize("path", ["-rf", "--model", "a\x1bb", "", "x" * 1025])
def test_a_path_that_could_be_read_as_an_option_or_hides_control_characters_is_refused(path):
    with pytest.raises(ValidationError, match="model"):
        spec(ft={"model": path})


def test_the_batch_must_divide_by_the_ranks_and_the_error_names_the_field():
    with pytest.raises(SpecRejected, match=r"finetune.batch_size: 6 does not divide by the job's 4 ranks"):
        check(spec(nodes=2, processes_per_node=2, ft={"batch_size": 6}), "ring", set())
    check(spec(nodes=2, ft={"batch_size": 6}), "ring", set())


def test_finetune_jobs_run_on_ring_where_the_agents_ship_and_collect():
    with pytest.raises(SpecRejected, match="backend: finetune jobs run on ring"):
        check(spec(), "mpi", set())


def test_every_rank_runs_agent_finetune_with_the_spec_as_flags():
    cmd = command_of(spec(ft={"num_layers": -1, "learning_rate": 2e-5}), ClusterConfig())
    assert cmd[:3] == ["python", "-m", "agent.finetune"]
    opts = finetune.parse_args(cmd[3:])  # the rank's own parser reads exactly what the coordinator wrote
    assert (opts.model, opts.data, opts.iters, opts.batch_size) == ("model", "data", 30, 4)
    assert (opts.num_layers, opts.learning_rate, opts.adapter_path) == (-1, 2e-5, "adapters")


def test_the_adapters_are_the_jobs_artifacts_and_progress_comes_from_its_own_lines():
    s = stored(spec())
    assert s.artifacts == ["adapters/**"] and s.progress_format == "jupiter"
    mine = stored(spec(artifacts=["adapters/adapters.safetensors"], progress_format="none"))
    assert mine.artifacts == ["adapters/adapters.safetensors"] and mine.progress_format == "none"
    assert spec_hash(spec()) == spec_hash(spec())  # the user's spec is what idempotency compares


def test_nodes_without_mlx_lm_are_named():
    assert finetune_jobs.missing_mlx_lm({"a": "0.32.2", "b": None}) == (
        "mlx-lm is not installed for the rank Python on b (install it there: python -m pip install mlx-lm)")
    assert finetune_jobs.missing_mlx_lm({"a": "0.32.2"}) is None


def test_a_restart_resumes_from_the_restored_adapters_and_their_step(tmp_path):
    import mlx.core as mx

    adapters = tmp_path / "adapters"
    assert finetune.resume_point(adapters, 30) == 0  # nothing restored: from the start
    finetune.save_adapters(adapters, {"w": mx.ones(3)}, 20)
    assert finetune.resume_point(adapters, 30) == 20
    assert finetune.resume_point(adapters, 20) == 0  # saved at the very end: nothing left to resume
    assert sorted(p.name for p in adapters.iterdir()) == ["adapters.safetensors"]  # no temp file left
    mx.save_safetensors(str(adapters / "adapters.safetensors"), {"w": mx.ones(3)})  # mlx-lm's own save
    assert finetune.resume_point(adapters, 30) == 0  # says no step: resumes nothing
    (adapters / "adapters.safetensors").write_bytes(b"not safetensors")
    assert finetune.resume_point(adapters, 30) == 0


def test_what_a_rank_lacks_is_said_before_anything_loads(tmp_path):
    opts = finetune.parse_args(["--model", str(tmp_path / "m"), "--data", str(tmp_path / "d"), "--iters", "5",
                                "--batch-size", "2"])
    found = finetune.problems(opts)
    assert any(p.startswith("model: no config.json in") for p in found)
    assert any(p.startswith("data: no train.jsonl in") for p in found)
