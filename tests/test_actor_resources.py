"""How many model actors a run starts, and with what, on a laptop, a CPU cluster and GPU nodes."""

import pytest
from pydantic import ValidationError

from curate.config import ActorResources, RayConfig
from curate.run import actor_resources, task_args


def pool(cpus, gpus, sharing=2, **asked):
    return actor_resources(ActorResources(**asked), cpus, gpus, sharing)


def test_a_two_core_laptop_runs_one_half_cpu_actor_per_model_stage():
    # Two 1-CPU actors on 2 cores starve Ray Data's read tasks and the run stalls.
    assert pool(2, 0) == {"min_size": 1, "max_size": 1, "num_cpus": 0.5, "num_gpus": 0.0}


def test_a_cpu_cluster_grows_each_pool_with_its_cores():
    assert pool(64, 0) == {"min_size": 1, "max_size": 8, "num_cpus": 1.0, "num_gpus": 0.0}
    assert pool(64, 0, sharing=1)["max_size"] == 16


def test_gpus_are_shared_by_the_stages_that_run_together_and_pools_grow_to_one_actor_per_gpu():
    assert pool(96, 8) == {"min_size": 1, "max_size": 8, "num_cpus": 1.0, "num_gpus": 0.5}
    assert pool(96, 8, sharing=1)["num_gpus"] == 1.0


def test_what_the_pipeline_asks_wins_over_what_is_derived():
    assert pool(96, 8, min_actors=2, max_actors=4, num_gpus=1, num_cpus=4) == {
        "min_size": 2, "max_size": 4, "num_cpus": 4.0, "num_gpus": 1.0}
    assert pool(2, 0, min_actors=3)["max_size"] == 3  # a minimum above the derived maximum raises the maximum


def test_stage_resources_are_checked_when_the_pipeline_loads():
    with pytest.raises(ValidationError, match="min_actors"):
        RayConfig(stages={"score": {"min_actors": 4, "max_actors": 2}})
    with pytest.raises(ValidationError, match="embedder"):
        RayConfig(stages={"embedder": {}})


def test_tasks_beside_half_cpu_actors_ask_half_a_cpu_so_small_nodes_never_stall():
    # Two nodes of one CPU, each holding one half-CPU actor, have half a CPU free each: a 1-CPU task fits nowhere.
    laptop = pool(2, 0)
    assert task_args(laptop, laptop) == {"num_cpus": 0.5}
    assert task_args(pool(96, 0), pool(96, 0, num_cpus=4)) == {"num_cpus": 1.0}
    assert task_args() == {"num_cpus": 1.0}
