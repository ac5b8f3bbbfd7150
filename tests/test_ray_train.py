"""Ray Train with DeepSpeed (ZeRO-2, gloo on CPU) on the real classifier loop, tiny model."""
import pandas as pd
import pytest


@pytest.mark.ray
def test_deepspeed_zero2_fit_reports_a_loadable_checkpoint(tmp_path):
    import ray

    from dcls_core import diffusion_augmenter as da
    from dcls_core.config import ModelConfig, RayConfig
    from jobs.ray_runtime import init_ray
    from jobs.ray_train import run_training
    from jobs.train_loops import classifier_loop
    import dataclasses

    rows = [{"id": f"r{i}", "text": t, "label": y, "split": "train"} for i, (t, y) in enumerate(
        [("a great film", "positive"), ("awful and dull", "negative")] * 8)]
    ray_cfg = RayConfig(num_workers=2, strategy="deepspeed", zero_stage=2, num_cpus=4)
    init_ray(ray_cfg)
    try:
        loop = {"model": dataclasses.asdict(ModelConfig(name="tiny")), "label_names": ["negative", "positive"],
                "seed": 1, "train": rows, "dev": rows[:4], "max_length": 16, "batch_size": 4,
                "weight_decay": 0.01, "tau": 0.1, "epochs": 1, "lr": 1e-3, "alpha": 1.0, "mode": "static",
                "name": "ds"}
        ckpt = run_training(classifier_loop, loop, ray_cfg, tmp_path / "train", "ds")
    finally:
        ray.shutdown()
    model, tok = da.load_classifier_checkpoint(ckpt)
    assert model.config.num_labels == 2
    out = model(**tok(["a great film"], return_tensors="pt"))
    assert out.logits.shape == (1, 2)
