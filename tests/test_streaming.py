"""The batch stages stream: a corpus goes from Parquet through importance scoring and generation
on Ray Data actors to the stage's Parquet without the driver holding its rows."""
import tracemalloc

import pandas as pd
import pytest

ROWS = 400
BUDGET_MB = 6.0  # the driver's Python allocations while the stages run (2.1 alone, 4.9 inside the full suite)


def _corpus(path, rows):
    words = ["good", "dull", "warm", "long", "bright", "slow", "funny", "flat"]
    texts = [" ".join(words[(i + j) % len(words)] for j in range(2000)) + f" number {i}" for i in range(rows)]
    pd.DataFrame({"id": [f"s{i:05d}" for i in range(rows)], "text": texts,
                  "label": ["negative", "positive"] * (rows // 2)}).to_parquet(path, index=False)


@pytest.mark.ray
def test_a_corpus_streams_through_the_batch_stages_without_the_driver_holding_it(tmp_path):
    import ray

    from dcls_core.artifacts import read_rows
    from dcls_core.config import load_config
    from jobs.benchmark_throughput import stage_checkpoints, stream_stages
    from jobs.ray_runtime import init_ray

    names = ["negative", "positive"]
    _corpus(tmp_path / "train.parquet", ROWS)
    checkpoints = stage_checkpoints("tiny", names, tmp_path / "ckpt")
    cfg = load_config(["model=tiny", "augment.n=2", "data.max_length=16", "ray.actors=2", "ray.cpus_per_actor=0.5",
                       "ray.batch_size=250", "generator.reverse_steps=1", "ray.num_cpus=4"])
    init_ray(cfg.ray)
    try:
        _corpus(tmp_path / "warm.parquet", 8)  # first imports and Ray Data's set-up: not the rows' cost
        stream_stages(tmp_path / "warm.parquet", tmp_path / "warm", checkpoints, names, cfg)
        tracemalloc.start()
        out = stream_stages(tmp_path / "train.parquet", tmp_path / "work", checkpoints, names, cfg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        ray.shutdown()
    assert out["scored"] == ROWS
    assert out["pseudo_rows"] + out["summary"]["dropped_empty"] == 2 * ROWS
    pseudo = read_rows(tmp_path / "work" / "generation" / "pseudo.parquet")
    scored = read_rows(tmp_path / "work" / "importance" / "importance.parquet")
    assert len(pseudo) == out["pseudo_rows"] > 0 and not pseudo["id"].duplicated().any()
    assert set(pseudo["source_id"]) <= set(scored["id"]) and len(scored) == ROWS
    assert not (tmp_path / "work" / "generation" / "generated").exists()  # no temporary rows left behind
    held = (pseudo.memory_usage(deep=True).sum() + scored.memory_usage(deep=True).sum()) / 2 ** 20
    print(f"driver peak {peak / 2 ** 20:.2f} MiB; rows held {held:.1f} MiB: pseudo "
          f"{pseudo.memory_usage(deep=True).sum() / 2 ** 20:.1f}, scored {scored.memory_usage(deep=True).sum() / 2 ** 20:.1f}")
    assert held > 2 * BUDGET_MB, "the corpus is too small for the budget to tell streaming from holding"
    assert peak / 2 ** 20 < BUDGET_MB, f"the driver allocated {peak / 2 ** 20:.1f} MiB (rows held: {held:.1f} MiB)"
