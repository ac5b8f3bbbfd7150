"""The throughput benchmark's measurements on the tiny model: each stage is timed against a bare
loop over the same inputs, and the counts it reports are those of the work it did."""
import pytest
import torch

from jobs import benchmark_throughput as bt

TEXTS = [f"the film number {i} was {'good and warm' if i % 2 else 'dull and far too long'} to me" for i in range(12)]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_generation_is_timed_against_k_bare_forward_passes_over_the_same_rows():
    out = bt.measure_generation(TEXTS, n=2, batch_size=4, max_length=32, repeats=1, model="tiny")
    assert out["pseudo_samples"] == 2 * len(TEXTS)
    assert out["reverse_steps"] == 4 and 0 < out["masked_share"] < 1
    assert out["tokens_x_steps"] > 4 * len(TEXTS) * 2  # every row's attended tokens, k times
    assert out["stage_seconds"] > 0 and out["bare_seconds"] > 0
    assert out["ratio"] > 0 and out["pseudo_per_s"] > 0


def test_one_step_generation_counts_one_pass_and_the_profile_names_its_costliest_functions():
    four = bt.measure_generation(TEXTS, n=2, batch_size=4, max_length=32, repeats=1, model="tiny")
    one = bt.measure_generation(TEXTS, n=2, batch_size=4, max_length=32, repeats=1, model="tiny",
                                reverse_steps=1, profile=5)
    assert one["reverse_steps"] == 1 and one["tokens_x_steps"] * 4 == four["tokens_x_steps"]
    top = one["profile"]["top_own_seconds"]
    assert len(top) == 5 and one["profile"]["seconds"] > 0
    own = [row["own_s"] for row in top]
    assert own == sorted(own, reverse=True) and all(row["calls"] >= 1 for row in top)


def test_scoring_and_the_peer_report_their_rates():
    scoring = bt.measure_scoring(TEXTS, batch_size=4, max_length=32, repeats=1, model="tiny")
    assert scoring["sentences"] == len(TEXTS) and scoring["ratio"] > 0
    assert scoring["sentences_per_s"] > 0 and scoring["bare_sentences_per_s"] > 0
    peer = bt.measure_peer(TEXTS[:4], max_length=32, repeats=1, model="tiny")
    assert peer["texts"] == 4 and peer["texts_per_s"] > 0


def _throughput_args(*argv):
    import argparse

    parser = argparse.ArgumentParser()
    bt.add_throughput(parser.add_subparsers())
    return parser.parse_args(["throughput", *argv])


def test_a_partial_run_updates_its_sections_of_the_file_and_keeps_the_others(tmp_path):
    import json

    out = tmp_path / "throughput.json"
    out.write_text(json.dumps({"generation": {"ratio": 0.5}, "measured": {"generation": "earlier"}}))
    args = _throughput_args("--sections", "scoring", "--model", "tiny", "--sentences", "8", "--repeats", "1",
                            "--threads", "1", "--out", str(out))
    args.func(args)
    got = json.loads(out.read_text())
    assert got["generation"] == {"ratio": 0.5} and got["measured"]["generation"] == "earlier"
    assert got["scoring"]["sentences"] == 8 and set(got["measured"]["scoring"]) == {"at", "commit"}
    assert not {"peer", "training", "scaling", "vs_peer"} & set(got)
    with pytest.raises(SystemExit, match="unknown"):
        bt.run_throughput(_throughput_args("--sections", "scoring,speed", "--out", str(out)))
