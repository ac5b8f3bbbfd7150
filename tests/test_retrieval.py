"""The retrieval augmenter (dcls_core.retrieval) and the probe head fitted on an arm's pseudo rows.

Retrieval: nearest corpus rows among those the proxy confidently gives the source's label; never a
labelled or test text; the pseudo schema, deterministic; a clear error without a corpus; the
pipeline's stages pass it the raw arm as its proxy. Tiny random models, no Ray.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dcls_core.augment import PSEUDO_COLUMNS, get_augmenter
from dcls_core.config import AugmentConfig, ClassifierConfig, ConfigError, RetrievalConfig, load_config
from dcls_core.retrieval import confident_neighbours

LABELS = ["neg", "pos"]
TRAIN = pd.DataFrame({"id": ["a", "b", "c"],
                      "text": ["a wonderful film with great actors", "a dull and boring mess", "great fun"],
                      "label": ["pos", "neg", "pos"]})
CORPUS = [f"sentence number {i} about a {w} movie" for i, w in
          enumerate(["great", "bad", "fine", "awful", "lovely", "boring", "superb", "poor"] * 5)]


def test_confident_neighbours_keeps_the_label_the_confidence_and_the_order():
    corpus = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.6, 0.8], [0.99, 0.01], [0.7, 0.7]], dtype=np.float32)
    probs = np.array([[0.1, 0.9], [0.2, 0.8], [0.9, 0.1], [0.4, 0.6], [0.45, 0.55], [0.8, 0.2]])
    sources = np.array([[1, 0], [0, 1]], dtype=np.float32)
    out = confident_neighbours(sources, [1, 0], corpus, probs, k=10, quantile=0.0)
    # source 0 (label 1): the rows whose top class is 1, most similar first
    assert out[0] == [0, 4, 1, 3]
    assert out[1] == [2, 5]
    # quantile 0.5 of class 1's probabilities over the corpus (0.55 .. 0.9 -> median 0.4..) drops the least sure
    strict = confident_neighbours(sources, [1, 0], corpus, probs, k=10, quantile=0.5)
    assert set(strict[0]) <= set(out[0]) and probs[strict[0], 1].min() >= np.quantile(probs[:, 1], 0.5)
    assert confident_neighbours(sources, [1, 0], corpus, probs, k=2, quantile=0.0)[0] == [0, 4]


@pytest.fixture()
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    # labelled and test texts in the corpus must never come back
    path.write_text("\n".join(CORPUS + list(TRAIN["text"]) + ["a test sentence"]) + "\n")
    return path


def _augmenter(tiny_model_cfg, corpus_file, proxy, n=3, quantile=0.0, who="raw", cache_dir=None, **kw):
    cfg = AugmentConfig(method="retrieval", n=n,
                        retrieval=RetrievalConfig(corpus=[str(corpus_file)], quantile=quantile, proxy=who), **kw)
    return get_augmenter("retrieval", model_cfg=tiny_model_cfg, augment_cfg=cfg, max_length=32,
                         exclude_texts=["a test sentence"], proxy=proxy, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def proxy(tiny_model_cfg):
    from dcls_core.models import load_classifier

    return load_classifier(tiny_model_cfg, len(LABELS), seed=0).eval()


def test_retrieval_rows_are_confident_corpus_neighbours(tiny_model_cfg, corpus_file, proxy, tokenizer):
    from dcls_core.training import predict

    out = _augmenter(tiny_model_cfg, corpus_file, proxy).augment(TRAIN, LABELS, seed=0)
    assert list(out.columns) == PSEUDO_COLUMNS + ["consistency"]
    assert set(out["text"]) <= set(CORPUS)  # never a labelled or a test text
    assert (out["label"] == out["source_id"].map(TRAIN.set_index("id")["label"])).all()
    assert sorted(out["id"]) == sorted(f"{s}~p{k}" for s in out["source_id"].unique()
                                       for k in range((out["source_id"] == s).sum()))
    # the proxy's top class is the inherited label, and consistency is its probability
    pred, probs = predict(proxy, out, tokenizer, LABELS, 32)
    labels = out["label"].map({n: i for i, n in enumerate(LABELS)}).to_numpy()
    assert (pred == labels).all()
    np.testing.assert_allclose(out["consistency"], probs[np.arange(len(out)), labels], atol=1e-5)
    # up to n per source, most similar first; the same rows again
    assert out.groupby("source_id").size().max() <= 3
    pd.testing.assert_frame_equal(out, _augmenter(tiny_model_cfg, corpus_file, proxy).augment(TRAIN, LABELS, seed=0))


def test_retrieval_survives_one_word_and_empty_sources(tiny_model_cfg, corpus_file, proxy):
    edge = pd.DataFrame({"id": ["w", "e", "p"], "text": ["wow", "", "!!! :)"], "label": ["pos", "neg", "neg"]})
    for who in ("raw", "probe"):
        out = _augmenter(tiny_model_cfg, corpus_file, proxy, who=who).augment(edge, LABELS, seed=0)
        assert set(out["source_id"]) <= {"w", "e", "p"}
        assert set(out["text"]) <= set(CORPUS) | set(TRAIN["text"])  # TRAIN is unlabelled text here
        assert (out["text"] != out["source_id"].map(edge.set_index("id")["text"])).all()


def test_retrieval_takes_a_proxy_checkpoint_and_follows_the_balance_policy(tiny_model_cfg, corpus_file, proxy,
                                                                          tokenizer, tmp_path):
    folder = proxy.save_pretrained(tmp_path / "proxy", label_names=LABELS)
    tokenizer.save_pretrained(str(folder))
    from_dir = _augmenter(tiny_model_cfg, corpus_file, str(folder)).augment(TRAIN, LABELS, seed=0)
    from_model = _augmenter(tiny_model_cfg, corpus_file, proxy).augment(TRAIN, LABELS, seed=0)
    pd.testing.assert_frame_equal(from_dir, from_model)
    balance = _augmenter(tiny_model_cfg, corpus_file, proxy, policy="balance").augment(TRAIN, LABELS, seed=0)
    assert list(balance["label"]) == ["neg"] and list(balance["source_id"]) == ["b"]


def test_the_probe_proxy_labels_with_the_frozen_probe_and_caches_corpus_features(tiny_model_cfg, corpus_file,
                                                                                 tokenizer, tmp_path):
    from dcls_core.classifier import probe_classifier
    from dcls_core.training import predict

    out = _augmenter(tiny_model_cfg, corpus_file, None, who="probe", cache_dir=tmp_path).augment(TRAIN, LABELS, 0)
    cached = list((tmp_path / "retrieval").glob("features-*.npy"))
    assert len(out) and len(cached) == 1
    probe = probe_classifier(tiny_model_cfg, TRAIN, LABELS, 32)
    pred, probs = predict(probe, out, tokenizer, LABELS, 32)
    labels = out["label"].map({n: i for i, n in enumerate(LABELS)}).to_numpy()
    assert (pred == labels).all()
    np.testing.assert_allclose(out["consistency"], probs[np.arange(len(out)), labels], atol=1e-4)
    # another seed's labelled rows: the same cached corpus features, this run's labelled texts left out
    other = TRAIN.assign(text=["sentence number 0 about a great movie", "a dull and boring mess", "great fun"])
    again = _augmenter(tiny_model_cfg, corpus_file, None, who="probe", cache_dir=tmp_path).augment(other, LABELS, 0)
    assert list((tmp_path / "retrieval").glob("features-*.npy")) == cached
    assert "sentence number 0 about a great movie" not in set(again["text"])


def test_the_corpus_defaults_to_the_warmup_corpus_then_the_dataset_and_says_when_it_is_empty(
        tiny_model_cfg, tmp_path, caplog):
    from dcls_core.config import DatasetConfig, GeneratorConfig, WarmupConfig
    from dcls_core.retrieval import corpus_sources

    named = AugmentConfig(method="retrieval", retrieval=RetrievalConfig(corpus=["x.txt"]))
    unset = AugmentConfig(method="retrieval")
    warm = GeneratorConfig(warmup=WarmupConfig(corpus=["india_covid_x"]))
    assert corpus_sources(named, warm) == ["x.txt"]
    assert corpus_sources(unset, warm) == ["india_covid_x"]
    assert corpus_sources(unset, GeneratorConfig(), DatasetConfig(name="sst2")) == ["sst2"]  # a preset
    assert corpus_sources(unset, GeneratorConfig(), DatasetConfig(name="mine", files={"train": "my.csv"})) == ["my.csv"]
    with pytest.raises(ConfigError, match="augment.retrieval.corpus"):
        corpus_sources(unset, GeneratorConfig(), None)
    assert load_config(["augment=retrieval"]).augment.retrieval.corpus is None  # composes alone (SST-2's split)
    # a corpus of labelled rows only: no pseudo samples, and the warning names the key
    only = tmp_path / "labelled.txt"
    only.write_text("\n".join(TRAIN["text"]) + "\n")
    aug = get_augmenter("retrieval", model_cfg=tiny_model_cfg, max_length=32, cache_dir=tmp_path,
                        augment_cfg=AugmentConfig(method="retrieval", retrieval=RetrievalConfig(corpus=[str(only)])))
    with caplog.at_level("WARNING"):
        assert len(aug.augment(TRAIN, LABELS, seed=0)) == 0
    assert "augment.retrieval.corpus" in caplog.text


def test_probe_rows_all_fits_the_head_on_originals_and_pseudo_rows(tiny_model_cfg, tokenizer):
    from dcls_core.classifier import init_head_from_frame
    from dcls_core.models import load_classifier
    from dcls_core.training import fit_classifier, probe_frame

    pseudo = pd.DataFrame({"id": ["a~p0", "b~p0", "b~p1"], "text": ["so great", "so bad", ""],
                           "label": ["pos", "neg", "neg"], "source_id": ["a", "b", "b"]})
    assert len(probe_frame(TRAIN, pseudo, ClassifierConfig())) == 3
    rows = probe_frame(TRAIN, pseudo, ClassifierConfig(probe_rows="all"))
    assert list(rows["text"]) == list(TRAIN["text"]) + ["so great", "so bad"]  # the empty one left out
    with pytest.raises(ConfigError, match="classifier.probe_rows"):
        ClassifierConfig(probe_rows="some")
    # a fit of 0 steps keeps the probe: the one of all its rows
    res = fit_classifier(load_classifier(tiny_model_cfg, 2, 0), tokenizer, TRAIN, None, LABELS,
                         ClassifierConfig(probe_rows="all", min_steps=0, epochs=1), 32, 0, pseudo_df=pseudo, steps=0)
    expected = load_classifier(tiny_model_cfg, 2, 0)
    init_head_from_frame(expected, tokenizer, rows, LABELS, 32)
    np.testing.assert_allclose(res.model.head.weight.detach(), expected.head.weight.detach(), atol=1e-6)
    originals_only = load_classifier(tiny_model_cfg, 2, 0)
    init_head_from_frame(originals_only, tokenizer, TRAIN, LABELS, 32)
    assert not np.allclose(res.model.head.weight.detach(), originals_only.head.weight.detach())


def test_the_pipeline_stages_give_retrieval_the_raw_arm(tmp_path):
    from dcls_core.artifacts import RunFolder
    from dcls_core.data import load_dataset
    from dcls_core.stages import LocalExecutor, load_pseudo, run_stages, stage_config

    cfg = load_config(["experiment=smoke", f"storage_path={tmp_path}", "augment.method=retrieval",
                       "augment.retrieval.corpus=[sst2]", "augment.retrieval.max_corpus=300",
                       "augment.retrieval.proxy=raw"])
    bundle = load_dataset(cfg.dataset, cfg.data)
    out = run_stages(cfg, bundle, RunFolder(tmp_path / "run"), LocalExecutor(cfg, tmp_path / "cache"),
                     until="generation")
    assert out["importance"] is None and out["generator"] is None
    assert out["raw"].key in out["generation"].meta["inputs"]  # the proxy is an input of the stage key
    pseudo = load_pseudo(out)
    assert len(pseudo) and set(pseudo["source_id"]) <= set(bundle.train["id"])
    labelled = set(bundle.train["text"]) | set(bundle.dev["text"]) | set(bundle.test["text"])
    assert not set(pseudo["text"]) & labelled
    # the default probe proxy reads no fit: the raw arm is not an input
    probe = load_config(["experiment=smoke", f"storage_path={tmp_path}", "augment.method=retrieval",
                         "augment.retrieval.corpus=[sst2]", "augment.retrieval.max_corpus=300"])
    out = run_stages(probe, bundle, RunFolder(tmp_path / "run"), LocalExecutor(probe, tmp_path / "cache"),
                     until="generation")
    assert out["raw"].key not in out["generation"].meta["inputs"] and len(load_pseudo(out))
    assert stage_config("generation", cfg) != stage_config(
        "generation", load_config(["experiment=smoke", "augment.method=retrieval", "augment.retrieval.corpus=[sst2]",
                                   "augment.retrieval.quantile=0.5", "augment.retrieval.max_corpus=300",
                                   "augment.retrieval.proxy=raw"]))
