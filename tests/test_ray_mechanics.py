"""Ray mechanics with toy functions: run-folder cache, actor pools (incl. a killed actor), Ray Train."""
import sys

import pandas as pd
import pytest

from dcls_core.artifacts import RunFolder, stage_key


# ----------------------------------------------------------------------------- no Ray
def test_stage_key_depends_on_inputs_and_config():
    a = stage_key("s", ["k1"], {"x": 1, "y": [1, 2]})
    assert a == stage_key("s", ["k1"], {"y": [1, 2], "x": 1.0})
    assert a != stage_key("s", ["k2"], {"x": 1, "y": [1, 2]})
    assert a != stage_key("s", ["k1"], {"x": 2, "y": [1, 2]})
    assert a != stage_key("t", ["k1"], {"x": 1, "y": [1, 2]})


def test_stage_skips_existing_and_never_trusts_half_outputs(tmp_path):
    run = RunFolder(tmp_path / "run")
    calls = []

    def ok(d):
        calls.append(1)
        (d / "out.txt").write_text("hi")
        return {"rows": 1}

    first = run.stage("a", [], {"p": 1}, ok)
    assert not first.skipped and (first.path / "out.txt").read_text() == "hi"
    again = run.stage("a", [], {"p": 1}, ok)
    assert again.skipped and again.key == first.key and len(calls) == 1
    assert again.meta["summary"] == {"rows": 1}

    def boom(d):
        (d / "half.txt").write_text("partial")
        raise KeyboardInterrupt  # a killed stage

    with pytest.raises(KeyboardInterrupt):
        run.stage("b", [first], {}, boom)
    assert not list(run.stages.glob("b-*")) and not list(run.stages.glob(".b-*"))
    done = run.stage("b", [first], {}, ok)
    assert not done.skipped and len(calls) == 2
    # a different upstream key means a different downstream stage
    assert run.stage("b", ["other"], {}, ok).key != done.key


# ----------------------------------------------------------------------------- Ray
class AddOne:
    """Toy actor: one row in, one row out; the fault hook kills the actor process once."""

    def __init__(self, threads=1, fault_after=0, fault_marker=None):
        from dcls_core.stages import FaultInjector

        self.fault = FaultInjector(fault_after, fault_marker)

    def __call__(self, batch):
        self.fault.tick()
        out = batch.copy()
        out["y"] = out["x"] + 1
        return out


@pytest.fixture(scope="module")
def ray_local():
    import ray
    from ray import cloudpickle

    from dcls_core.config import RayConfig
    from jobs.ray_runtime import init_ray

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    init_ray(RayConfig(num_cpus=4))
    yield
    ray.shutdown()


@pytest.mark.ray
def test_actor_pool_killed_actor_is_restarted_without_missing_or_duplicated_rows(ray_local, tmp_path):
    from dcls_core.config import RayConfig
    from dcls_core.artifacts import read_rows
    from jobs.ray_data import run_actor_pool

    frame = pd.DataFrame({"id": [f"r{i:03d}" for i in range(60)], "x": range(60)}).sample(frac=1, random_state=0)
    marker = tmp_path / "killed"
    cfg = RayConfig(actors=2, cpus_per_actor=0.5, batch_size=8, max_restarts=2, max_task_retries=3)
    frame.to_parquet(tmp_path / "in.parquet")
    rows = run_actor_pool(tmp_path / "in.parquet", None, AddOne, {"fault_after": 2, "fault_marker": str(marker)},
                          cfg, tmp_path / "out", "toy", expected_rows=len(frame))
    assert marker.exists(), "the fault hook did not fire"
    out = read_rows(tmp_path / "out")
    assert rows == len(out) and list(out["id"]) == sorted(frame["id"])
    assert (out["y"] == out["x"] + 1).all()
