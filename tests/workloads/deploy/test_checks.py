"""The workloads' config checks, called directly on the schema's view of the lab stack: a job's
hosts and a service's replicas (with their surge pods) against the pool and the team's quota,
each kind in its own words, and the borrowing Kueue allows in a cohort."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mlstack.stacks.errors import Problem
from mlstack.stacks.schema import Platform
from mlstack.stacks.stackfile import read_stack
from mlstack.stacks.validate import load_platform
from mlstack.workloads.deploy.checks import workload_problems

#: The lab's GPU pools as the pool checks pass them on: index and GPUs per node.
LAB_SOUND = {"a100": (1, 8), "l40s": (2, 4)}
#: The lab's language team (8 of the 16 A100s; 64 CPUs, 512 GiB) and its lm-small job.
JOB = {"name": "lm", "team": "language", "pool": "a100", "model": "small", "cpu": 4}
SERVICE = {"name": "chat", "team": "language", "pool": "a100", "model": "lm", "cpu": 2}


def _problems(lab_config: dict[str, Any], *, job: Any = None, service: Any = None) -> list[Problem]:
    lab_config["workloads"] = {
        "training_jobs": [{**JOB, **job}] if job is not None else [],
        "inference_services": [{**SERVICE, **service}] if service is not None else [],
    }
    return workload_problems(Platform.model_validate(lab_config), LAB_SOUND)


def test_the_lab_stack_passes(lab_config: dict[str, Any]) -> None:
    assert workload_problems(Platform.model_validate(lab_config), LAB_SOUND) == []


def test_a_job_on_more_nodes_than_the_pool_has(lab_config: dict[str, Any]) -> None:
    (p,) = _problems(lab_config, job={"num_hosts": 6, "gpus_per_host": 4, "global_batch_size": 48})
    assert (p.path, p.value) == ("platform.workloads.training_jobs[0].num_hosts", 6)
    assert p.message == "6 hosts of 4 GPUs need 3 nodes of pool 'a100', which has at most 2"
    assert p.fix == "lower num_hosts to at most 4 or raise platform.node_pools[1].max_nodes"


def test_a_job_beyond_the_teams_gpu_quota(lab_config: dict[str, Any]) -> None:
    (p,) = _problems(lab_config, job={"num_hosts": 3, "gpus_per_host": 4, "global_batch_size": 48})
    assert p.message == (
        "the job needs 12 GPUs of pool 'a100' at once (3 hosts x 4) but team language may hold "
        "at most 8 there, so Kueue would never admit it"
    )
    assert p.fix == (
        "lower num_hosts or gpus_per_host, or raise platform.teams[1].quota.gpus.a100 to 12"
    )


def test_a_job_the_cohort_lends_gpus_to_fits(lab_config: dict[str, Any]) -> None:
    """Kueue lets a cohort member borrow up to the pool: the one definition of reachable GPUs."""
    lab_config["tenancy"] = {"cohorts": [{"name": "shared"}]}
    lab_config["teams"][1]["cohort"] = "shared"
    assert (
        _problems(lab_config, job={"num_hosts": 3, "gpus_per_host": 4, "global_batch_size": 48})
        == []
    )
    lab_config["teams"][1]["quota"]["borrowing_limit_gpus"] = {"a100": 2}
    (p,) = _problems(lab_config, job={"num_hosts": 3, "gpus_per_host": 4, "global_batch_size": 48})
    assert "may hold at most 10 there" in p.message


def test_a_jobs_pods_beyond_the_teams_cpu_quota(lab_config: dict[str, Any]) -> None:
    (p,) = _problems(lab_config, job={"num_hosts": 2, "gpus_per_host": 4, "cpu": 40})
    assert (p.path, p.value) == ("platform.workloads.training_jobs[0].cpu", 40)
    assert p.message == (
        "2 pods x 40 CPUs = 80 CPUs exceed team language's quota of 64 CPUs, so Kueue would "
        "never admit the job"
    )
    assert p.fix == "lower it to at most 32 per pod, or raise platform.teams[1].quota.cpu"


def test_a_service_with_more_pods_than_the_pool_can_place(lab_config: dict[str, Any]) -> None:
    (p,) = _problems(lab_config, service={"gpus_per_replica": 8, "replicas": 2})
    assert (p.path, p.value) == ("platform.workloads.inference_services[0].replicas", 2)
    assert p.message == (
        "3 pods at once (2 replicas and 1 surge pod of a rolling update) of 8 GPUs need more "
        "than the 2 that pool 'a100' can place (2 nodes)"
    )
    assert p.fix == "lower replicas to at most 1 or raise platform.node_pools[1].max_nodes"


def test_a_service_beyond_the_teams_gpu_quota(lab_config: dict[str, Any]) -> None:
    (p,) = _problems(lab_config, service={"gpus_per_replica": 4, "max_replicas": 2})
    assert (p.path, p.value) == ("platform.workloads.inference_services[0].max_replicas", 2)
    assert p.message == (
        "the service needs up to 12 GPUs of pool 'a100' at once (2 replicas and 1 surge pod of a "
        "rolling update, x 4) but team language may hold at most 8 there, so Kueue would hold "
        "back the last pods and a rollout would stall"
    )
    assert (
        p.fix == "lower max_replicas to at most 1, or raise platform.teams[1].quota.gpus.a100 to 12"
    )


def test_a_services_pods_beyond_the_teams_pod_quota(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][1]["quota"]["pods"] = 4
    (p,) = _problems(lab_config, service={"gpus_per_replica": 1, "max_replicas": 4})
    assert (p.path, p.value) == ("platform.workloads.inference_services[0].max_replicas", 4)
    assert p.message == (
        "5 pods at most (replicas and rolling-update surge) exceed team language's quota of 4 pods"
    )
    assert p.fix == "lower max_replicas, or raise platform.teams[1].quota.pods"


def test_a_gpu_service_on_a_cloud_pool_that_leaves_gpus_per_node_to_the_catalog() -> None:
    """aws-dev's l4 pool named by its instance type alone (g6.xlarge, 1 GPU): its 1-GPU service
    fits, as its training job does (the check once read the unresolved 0 GPUs per node)."""
    platform = copy.deepcopy(read_stack("aws-dev").platform)
    (l4,) = [pool for pool in platform["node_pools"] if pool["name"] == "l4"]
    del l4["gpus_per_node"]
    l4["instance_type"] = "g6.xlarge"
    loaded = load_platform(platform)
    assert next(p for p in loaded.node_pools if p.name == "l4").gpus_per_node == 1


def test_a_placement_fix_never_lowers_max_replicas_below_replicas(
    lab_config: dict[str, Any],
) -> None:
    # 4 pods of 8 GPUs on a pool of two 8-GPU nodes; max_replicas cannot go below replicas (2).
    service = {"gpus_per_replica": 8, "replicas": 2, "max_replicas": 3}
    (p,) = _problems(lab_config, service=service)
    assert p.path == "platform.workloads.inference_services[0].max_replicas"
    assert p.fix == "raise platform.node_pools[1].max_nodes to at least 4"


def test_a_quota_fix_never_lowers_max_replicas_below_replicas(lab_config: dict[str, Any]) -> None:
    (p,) = _problems(lab_config, service={"gpus_per_replica": 4, "replicas": 2, "max_replicas": 2})
    assert p.fix == "raise platform.teams[1].quota.gpus.a100 to 12"


def test_a_placement_fix_keeps_replicas_above_the_canary(lab_config: dict[str, Any]) -> None:
    service = {
        "gpus_per_replica": 8,
        "replicas": 2,
        "version": "v1",
        "canary": {"version": "v2", "replicas": 1},
    }
    found = _problems(lab_config, service=service)
    assert found, "2 replicas, a canary and a surge pod of 8 GPUs exceed two 8-GPU nodes"
    assert all("lower replicas" not in p.fix for p in found)


def test_applying_any_suggested_lower_bound_causes_no_field_conflict(
    lab_config: dict[str, Any],
) -> None:
    """Every "lower <field> to at most N" the checks suggest, applied, leaves the service's
    own fields agreeing (max_replicas >= replicas > canary replicas)."""
    import re

    suggested = 0
    for gpus in (1, 2, 4, 8):
        for replicas in (1, 2, 3):
            for extra in (None, 0, 1, 3):
                service: dict[str, Any] = {"gpus_per_replica": gpus, "replicas": replicas}
                if extra is not None:
                    service["max_replicas"] = replicas + extra
                for p in _problems(copy.deepcopy(lab_config), service=service):
                    m = re.match(r"lower (max_replicas|replicas) to at most (\d+)", p.fix)
                    if m is None:
                        continue
                    suggested += 1
                    fixed = {**service, m.group(1): int(m.group(2))}
                    after = _problems(copy.deepcopy(lab_config), service=fixed)
                    assert not [q for q in after if "is below replicas" in q.message], (service, p)
    assert suggested > 5


def test_a_training_job_at_the_serving_priority_is_refused(lab_config: dict[str, Any]) -> None:
    (p,) = _problems(lab_config, job={"priority": "mlstack-serving"})
    assert (p.path, p.value) == ("platform.workloads.training_jobs[0].priority", "mlstack-serving")
    assert "preempt the team's serving pods" in p.message
    assert p.fix == "use mlstack-training, or mlstack-best-effort"


def test_a_service_whose_model_no_job_exports_gets_a_note_naming_the_jobs(
    lab_config: dict[str, Any],
) -> None:
    from mlstack.workloads.deploy.checks import workload_notes

    lab_config["workloads"] = {
        "training_jobs": [JOB],
        "inference_services": [{**SERVICE, "model": "lm-large"}],
    }
    (note,) = workload_notes(Platform.model_validate(lab_config))
    assert "serves model 'lm-large', which no training job of team language exports" in note
    assert "(its jobs: lm)" in note
    lab_config["workloads"]["inference_services"][0]["model"] = "lm"
    assert workload_notes(Platform.model_validate(lab_config)) == []


# --- spot: what a reclaim leaves the job --------------------------------------------------------


def _spot_problems(stack: str, version: str | None = None, **job: Any) -> list[Problem]:
    """The problems of the stack's first training job with `job`'s fields, on its spot pool."""
    platform = copy.deepcopy(read_stack(stack).platform)
    platform["workloads"]["training_jobs"][0].update(job)
    if version is not None:
        platform["cluster"]["kubernetes_version"] = version
    loaded = Platform.model_validate(platform)
    sound = {p.name: (i, p.gpus_per_node or 1) for i, p in enumerate(loaded.node_pools)}
    return workload_problems(loaded, sound)


def test_the_dev_stacks_jobs_default_to_their_spot_notice() -> None:
    from mlstack.workloads.deploy.settings import job_settings

    for stack, notice in (("aws-dev", 120), ("gcp-dev", 105)):
        platform = load_platform(read_stack(stack).platform)
        job = platform.workloads.training_jobs[0]
        pool = platform.pool(job.pool)
        assert pool.capacity.value == "spot"
        assert job_settings(job, pool, notice).termination_grace_period_s == notice
        assert _spot_problems(stack) == []


def test_a_spot_job_asking_more_than_the_notice_is_refused() -> None:
    [p] = _spot_problems("aws-dev", termination_grace_period_s=300)
    assert p.path == "platform.workloads.training_jobs[0].termination_grace_period_s"
    assert "longer than the 120 s AWS gives a pod on spot pool 'l4'" in p.message
    assert p.fix.startswith("use at most 120")
    [p] = _spot_problems("gcp-dev", termination_grace_period_s=120)
    assert "longer than the 105 s GCP gives" in p.message


def test_a_spot_job_whose_checkpoint_cannot_be_saved_in_the_notice_is_refused() -> None:
    """GKE before 1.35 gives a spot pod 15 s, and "medium" saves 4 GiB, about 40 s at 100 MiB/s:
    refused there, accepted with 1.35's 105 s."""
    assert _spot_problems("gcp-dev", "1.34", model="medium", steps=2000) != []
    [p] = _spot_problems("gcp-dev", "1.34", model="medium", steps=2000)
    assert p.path == "platform.workloads.training_jobs[0].pool"
    assert "model 'medium' saves 4.0 GiB of checkpoint on SIGTERM, about 40 s" in p.message
    assert "its pods get 15 s on spot pool 'l4'" in p.message
    assert p.fix == "run it on an on-demand pool"
    assert _spot_problems("gcp-dev", "1.35", model="medium", steps=2000) == []


def test_a_spot_job_that_only_saves_at_the_end_is_refused() -> None:
    [p] = _spot_problems("aws-dev", checkpoint_every_steps=2000)
    assert p.path == "platform.workloads.training_jobs[0].checkpoint_every_steps"
    assert "saves no checkpoint before step 2000, the last" in p.message
    assert p.fix == "save every at most 200 steps, or use an on-demand pool"
    assert _spot_problems("aws-dev", checkpoint_every_steps=1999) == []


def test_a_job_on_demand_gets_the_save_time_it_needs(lab_config: dict[str, Any]) -> None:
    [p] = _problems(lab_config, job={"model": "medium", "termination_grace_period_s": 30})
    assert p.path == "platform.workloads.training_jobs[0].termination_grace_period_s"
    assert p.fix == "set termination_grace_period_s to at least 70"
    assert _problems(lab_config, job={"model": "medium"}) == []


def test_a_spot_service_asking_more_than_the_notice_is_refused() -> None:
    platform = copy.deepcopy(read_stack("aws-dev").platform)
    platform["workloads"]["inference_services"][0]["termination_grace_period_s"] = 200
    loaded = Platform.model_validate(platform)
    sound = {p.name: (i, p.gpus_per_node or 1) for i, p in enumerate(loaded.node_pools)}
    [p] = workload_problems(loaded, sound)
    assert p.path == "platform.workloads.inference_services[0].termination_grace_period_s"
    assert "120 s AWS gives a pod on spot pool 'l4'" in p.message


def test_a_spot_job_gets_every_preemption_problem_at_once() -> None:
    found = _spot_problems("aws-dev", termination_grace_period_s=300, checkpoint_every_steps=2000)
    assert [p.path.rsplit(".", 1)[1] for p in found] == [
        "termination_grace_period_s",
        "checkpoint_every_steps",
    ]


def test_a_spot_job_whose_save_fits_the_notice_is_told_the_grace_it_needs() -> None:
    """'medium' needs about 40 s (+30 s margin) and AWS gives 120 s: raising the grace fixes it."""
    [p] = _spot_problems("aws-dev", model="medium", steps=2000, termination_grace_period_s=30)
    assert p.path == "platform.workloads.training_jobs[0].termination_grace_period_s"
    assert p.fix == "set termination_grace_period_s to at least 70 (at most 120 on spot)"


def test_a_service_follows_an_alias_or_a_version_never_both(lab_config: dict[str, Any]) -> None:
    (p,) = _problems(lab_config, service={"alias": "champion", "version": "step-1"})
    assert (p.path, p.value) == ("platform.workloads.inference_services[0].alias", "champion")
    assert "is set together with version 'step-1'" in p.message
    assert _problems(lab_config, service={"alias": "champion"}) == []


@pytest.mark.parametrize(
    ("service", "path", "message"),
    [
        (
            {"alias": "champion", "canary": {"replicas": 1}},
            "canary",
            "needs exactly one of version and alias",
        ),
        (
            {"alias": "champion", "canary": {"alias": "canary", "version": "s-2"}},
            "canary",
            "needs exactly one of version and alias (both are set)",
        ),
        (
            {"canary": {"alias": "canary"}},
            "version",
            "a canary needs the stable replicas pinned",
        ),
        (
            {"alias": "champion", "canary": {"alias": "champion"}},
            "canary.alias",
            "is the alias the stable replicas serve",
        ),
    ],
)
def test_what_a_canary_serves_is_checked(
    lab_config: dict[str, Any], service: dict[str, Any], path: str, message: str
) -> None:
    found = _problems(lab_config, service={"replicas": 2, **service})
    assert [(p.path, p.message[: len(message)]) for p in found] == [
        (f"platform.workloads.inference_services[0].{path}", message)
    ]


def test_a_canary_may_follow_the_canary_alias(lab_config: dict[str, Any]) -> None:
    service = {"replicas": 2, "alias": "champion", "canary": {"alias": "canary"}}
    assert _problems(lab_config, service=service) == []
