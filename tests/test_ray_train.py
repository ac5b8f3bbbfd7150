"""Ray Train with DeepSpeed (ZeRO-2, gloo on CPU) on the real classifier loop, tiny model."""
import pandas as pd
import pytest


@pytest.mark.ray
def test_deepspeed_zero2_fit_reports_a_loadable_checkpoint(tmp_path):
    import ray

    from dcls_core import diffusion_augmenter as da
    from dcls_core.config import ClassifierConfig, ModelConfig, RayConfig
    from jobs.ray_runtime import init_ray
    from jobs.ray_train import run_training
    from jobs.train_loops import classifier_loop
    import dataclasses

    rows = [{"id": f"r{i}", "text": t, "label": y, "split": "train"} for i, (t, y) in enumerate(
        [("a great film", "positive"), ("awful and dull", "negative")] * 8)]
    ray_cfg = RayConfig(num_workers=2, strategy="deepspeed", zero_stage=2, num_cpus=4)
    init_ray(ray_cfg)
    try:
        train, dev = tmp_path / "train.parquet", tmp_path / "dev.parquet"
        pd.DataFrame.from_records(rows).to_parquet(train)
        pd.DataFrame.from_records(rows[:4]).to_parquet(dev)
        loop = {"model": dataclasses.asdict(ModelConfig(name="tiny")), "label_names": ["negative", "positive"],
                "seed": 1, "datasets": {"train": str(train), "dev": str(dev)}, "max_length": 16, "mode": "static",
                "name": "ds",
                "classifier": dataclasses.asdict(ClassifierConfig(epochs=1, min_steps=3, batch_size=4, lr=1e-3,
                                                                  eval_every=2))}
        ckpt = run_training(classifier_loop, loop, ray_cfg, tmp_path / "train", "ds")
    finally:
        ray.shutdown()
    model, tok = da.load_classifier_checkpoint(ckpt)
    assert model.num_labels == 2 and model.pooling == "cls"
    out = model(**tok(["a great film"], return_tensors="pt"))
    assert out.logits.shape == (1, 2)
    history = __import__("json").loads((ckpt / "history.json").read_text())
    assert [h["step"] for h in history] == [0, 2, 4]  # the shared step loop: 16 rows / batch 4, dev at 0, 2, 4
