"""`dcls augment` on a CSV a user brings (tiny model, in one process, no Ray)."""
import json

import pandas as pd
import pytest

from dcls_core.cli import main

TINY = ["model=tiny", "augment.n=2", "classifier.proxy_epochs=1", "classifier.batch_size=4",
        "generator.epochs=1", "generator.T=8", "generator.group_size=2", "generator.group_index=2",
        "generator.reverse_steps=1", "generator.warmup.enabled=false", "data.max_length=24", "data.dev_size=0.25"]


def _csv(path):
    rows = []
    for i in range(8):
        rows.append({"body": f"i loved this phone, great battery {i}", "mood": "happy"})
        rows.append({"body": f"screen broke after a day, awful {i}", "mood": "angry"})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_dcls_augment_on_a_user_csv(tmp_path, capsys):
    src = _csv(tmp_path / "my.csv")
    out = tmp_path / "augmented.parquet"
    code = main(["augment", "--input", str(src), "--text-column", "body", "--label-column", "mood",
                 "--output", str(out), f"storage_path={tmp_path / 'store'}", *TINY])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    frame = pd.read_parquet(out)
    for col in ("id", "text", "label", "is_pseudo", "source_id", "step", "mask_ratio", "changed_ratio",
                "consistency"):
        assert col in frame.columns, col
    originals, pseudo = frame[~frame["is_pseudo"]], frame[frame["is_pseudo"]]
    assert len(originals) == 16 and len(pseudo) == 32 == summary["pseudo"]
    assert set(pseudo["source_id"]) == set(originals["id"])
    assert set(pseudo["label"]) == {"happy", "angry"}
    assert sorted(pseudo["step"].unique()) == [3, 4]
    assert not frame["id"].duplicated().any()


@pytest.mark.parametrize("args,message", [
    (["--input", "/nonexistent/my.csv"], "not found"),
    (["--label-column", "nope"], "nope"),
])
def test_dcls_augment_bad_input_fails_with_a_message(tmp_path, capsys, args, message):
    src = _csv(tmp_path / "my.csv")
    base = {"--input": str(src), "--text-column": "body", "--label-column": "mood",
            "--output": str(tmp_path / "o.parquet")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = ["augment"] + [x for kv in base.items() for x in kv] + TINY
    assert main(argv) == 2
    assert message in capsys.readouterr().err
