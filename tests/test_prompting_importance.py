"""Label prompts (tokens, embeddings, layout, alignment) and token importance (Eq. 1)."""
import copy
from types import SimpleNamespace

import pytest
import torch

from dcls_core.importance import ImportanceError, score_texts, token_importance
from dcls_core.models import load_classifier, load_masked_lm
from dcls_core.prompting import (PromptingError, add_label_tokens, align_importance,
                                 encode_plain, encode_prompted, label_name_piece_ids,
                                 label_token, place_importance)

LABELS = ["positive", "negative", "very_negative"]
TEXTS = ["the film was great", "a dull and boring movie that never ends", "meh"]


@pytest.fixture()
def tok(tokenizer):
    """A private copy: adding label tokens must not leak into the session tokenizer."""
    return copy.deepcopy(tokenizer)


@pytest.fixture(scope="module")
def mlm(tiny_model_cfg):
    return load_masked_lm(tiny_model_cfg, seed=0)


@pytest.fixture(scope="module")
def classifier(tiny_model_cfg):
    return load_classifier(tiny_model_cfg, num_labels=2, seed=0)


def test_label_token_format():
    assert label_token("joy") == "<label:joy>"


def test_add_label_tokens_vocab_and_embedding_init(tok, mlm):
    model = copy.deepcopy(mlm)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    n_before = len(tok)
    ids = add_label_tokens(tok, model, LABELS)
    assert len(tok) == n_before + len(LABELS)
    assert sorted(ids.values()) == list(range(n_before, n_before + len(LABELS)))
    vocab = tok.get_vocab()
    for name, tid in ids.items():
        assert vocab[label_token(name)] == tid
        assert tok(label_token(name), add_special_tokens=False)["input_ids"] == [tid]
        assert tid in tok.all_special_ids  # skipped when decoding
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == len(tok)
    # each new row is the mean of the label name's word pieces (not random)
    for name, tid in ids.items():
        pieces = label_name_piece_ids(tok, name)
        assert torch.allclose(emb[tid], emb_before[pieces].mean(0), atol=1e-6)
    pieces = label_name_piece_ids(tok, "very_negative")
    assert pieces == tok("very negative", add_special_tokens=False)["input_ids"] and len(pieces) >= 2
    # the old rows are untouched and the (tied) output layer grew with the input embeddings
    assert torch.equal(emb[:n_before], emb_before)
    assert model.get_output_embeddings().weight.shape[0] == len(tok)


def test_add_label_tokens_is_idempotent(tok, mlm, tiny_model_cfg):
    model = copy.deepcopy(mlm)
    ids = add_label_tokens(tok, model, LABELS)
    with torch.no_grad():  # pretend training moved a prompt embedding
        model.get_input_embeddings().weight[ids["positive"]] += 1.0
    learned = model.get_input_embeddings().weight.detach().clone()
    n = len(tok)
    again = add_label_tokens(tok, model, LABELS)
    assert again == ids and len(tok) == n
    assert torch.equal(model.get_input_embeddings().weight, learned)
    # same tokenizer, a freshly loaded model: rows are created and initialised for it
    fresh = load_masked_lm(tiny_model_cfg, seed=1)
    before = fresh.get_input_embeddings().weight.detach().clone()
    assert add_label_tokens(tok, fresh, LABELS) == ids
    pieces = label_name_piece_ids(tok, "negative")
    assert torch.allclose(fresh.get_input_embeddings().weight[ids["negative"]],
                          before[pieces].mean(0), atol=1e-6)


def test_encode_prompted_layout_and_maskable(tok):
    ids = add_label_tokens(tok, None, LABELS)
    labels = ["positive", "negative", "very_negative"]
    batch = encode_prompted(tok, TEXTS, labels, ids, max_length=32)
    input_ids, maskable = batch["input_ids"], batch["maskable"]
    for i, (text, y) in enumerate(zip(TEXTS, labels)):
        row = input_ids[i]
        assert int(row[0]) == tok.cls_token_id
        assert int(row[1]) == ids[y]
        assert int(row[2]) == tok.sep_token_id
        text_ids = tok(text, add_special_tokens=False)["input_ids"]
        assert row[maskable[i]].tolist() == text_ids  # maskable = exactly the text tokens
        n = len(text_ids)
        assert int(row[3 + n]) == tok.sep_token_id
    assert not bool(maskable[:, :3].any())  # CLS, prompt, SEP
    assert not bool((maskable & ~batch["attention_mask"].bool()).any())  # no padding
    assert bool(batch["prompt_mask"][:, 1].all()) and int(batch["prompt_mask"].sum()) == 3
    assert batch["maskable"].dtype == torch.bool


def test_encode_prompted_truncates_only_the_text(tok):
    ids = add_label_tokens(tok, None, LABELS)
    long_text = " ".join(["word"] * 50)
    batch = encode_prompted(tok, [long_text], ["negative"], ids, max_length=10)
    assert batch["input_ids"].shape[1] == 10
    assert int(batch["input_ids"][0, 1]) == ids["negative"]
    assert int(batch["maskable"].sum()) == 10 - 4  # [CLS] <label> [SEP] ... [SEP]


def test_encode_prompted_unknown_label_raises(tok, tokenizer):
    ids = add_label_tokens(tok, None, ["positive"])
    with pytest.raises(PromptingError):
        encode_prompted(tok, ["x"], ["negative"], ids, 16)
    # label id known to the caller but never added to this (session) tokenizer
    with pytest.raises(PromptingError):
        encode_prompted(tokenizer, ["x"], ["positive"], ids, 16)


def test_align_importance_maps_text_tokens_in_order(tok):
    ids = add_label_tokens(tok, None, LABELS)
    plain = encode_plain(tok, TEXTS, max_length=32)
    prompted = encode_prompted(tok, TEXTS, ["positive"] * 3, ids, max_length=32)
    values = torch.arange(plain["input_ids"].numel(), dtype=torch.float32).view_as(
        plain["input_ids"]) + 1.0
    aligned = align_importance(values, plain, prompted)
    assert aligned.shape == prompted["input_ids"].shape
    for i in range(3):
        assert aligned[i][prompted["maskable"][i]].tolist() == values[i][plain["text_mask"][i]].tolist()
    assert not bool(aligned[~prompted["maskable"]].any())  # prompt/special/padding get 0


def test_align_importance_robust_to_truncation(tok):
    ids = add_label_tokens(tok, None, LABELS)
    text = ["one two three four five six seven eight"]
    plain = encode_plain(tok, text, max_length=10)  # 8 text tokens
    prompted = encode_prompted(tok, text, ["positive"], ids, max_length=10)  # 6 text tokens
    values = torch.linspace(0.1, 1.0, plain["input_ids"].shape[1]).unsqueeze(0)
    aligned = align_importance(values, plain, prompted)
    plain_text = values[0][plain["text_mask"][0]].tolist()
    assert aligned[0][prompted["maskable"][0]].tolist() == pytest.approx(plain_text[:6])
    # the other way round: a prompted row longer than the list gets zeros at its tail
    placed = place_importance([[0.5, 0.25]], prompted)
    assert placed[0][prompted["maskable"][0]].tolist() == [0.5, 0.25, 0, 0, 0, 0]
    assert not bool(place_importance(None, prompted).any())


def test_token_importance_is_last_layer_cls_row_head_mean(tokenizer, classifier):
    plain = encode_plain(tokenizer, TEXTS, max_length=32)
    classifier.train()
    w = token_importance(classifier, plain["input_ids"], plain["attention_mask"],
                         special_mask=plain["special_mask"])
    assert classifier.training  # mode restored
    classifier.eval()
    with torch.no_grad():
        out = classifier(input_ids=plain["input_ids"], attention_mask=plain["attention_mask"],
                         output_attentions=True)
    classifier.train()
    manual = out.attentions[-1][:, :, 0, :].mean(1)
    first = out.attentions[0][:, :, 0, :].mean(1)
    text = plain["text_mask"]
    assert torch.allclose(w[text], manual[text], atol=1e-6)
    assert not torch.allclose(w[text], first[text], atol=1e-3)  # really the last layer
    assert not bool(w[~text].any())  # specials and padding are 0
    assert bool((w >= 0).all()) and bool((w.sum(1) <= 1 + 1e-5).all())
    assert bool((w.sum(1) > 0).all())
    # without an explicit special mask: first and last attended tokens are treated as special
    w2 = token_importance(classifier, plain["input_ids"], plain["attention_mask"])
    assert torch.allclose(w2, w)


def test_token_importance_needs_attention_weights(tokenizer):
    class NoAttention(torch.nn.Module):
        def forward(self, input_ids, attention_mask, output_attentions=False):
            return SimpleNamespace(logits=torch.zeros(input_ids.shape[0], 2), attentions=None)

    plain = encode_plain(tokenizer, ["hello"], max_length=8)
    with pytest.raises(ImportanceError, match="eager"):
        token_importance(NoAttention(), plain["input_ids"], plain["attention_mask"])


def test_score_texts_one_value_per_text_token(tokenizer, classifier):
    scores = score_texts(classifier, tokenizer, TEXTS, max_length=32, batch_size=2)
    assert [len(s) for s in scores] == [len(tokenizer(t, add_special_tokens=False)["input_ids"])
                                        for t in TEXTS]
    assert all(0 <= v <= 1 for s in scores for v in s)
    assert all(sum(s) <= 1 + 1e-5 for s in scores)
    # the same numbers as token_importance on the batch, whatever the batch size
    plain = encode_plain(tokenizer, TEXTS, max_length=32)
    w = token_importance(classifier, plain["input_ids"], plain["attention_mask"],
                         special_mask=plain["special_mask"])
    for i, s in enumerate(scores):
        assert s == pytest.approx(w[i][plain["text_mask"][i]].tolist(), abs=1e-5)


def test_roberta_style_pair_template_end_to_end():
    """A non-BERT family (<s> A </s></s> B </s>, no token types), built offline in memory."""
    import pandas as pd
    from transformers import AutoModelForMaskedLM, RobertaConfig, RobertaTokenizer

    from dcls_core.config import GeneratorConfig
    from dcls_core.generation import generate_pseudo_samples, plan_per_sample

    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>", "Ġ"])}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab["Ġ" + c] = len(vocab)
    tok = RobertaTokenizer(vocab=vocab, merges=[])
    conf = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=64, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_config(conf, attn_implementation="eager")
    ids = add_label_tokens(tok, model, ["pos", "neg"])
    batch = encode_prompted(tok, ["ab cd", "e"], ["pos", "neg"], ids, max_length=16)
    row = batch["input_ids"][0].tolist()
    assert row[:4] == [tok.bos_token_id, ids["pos"], tok.eos_token_id, tok.eos_token_id]
    assert tok.convert_ids_to_tokens(batch["input_ids"][0][batch["maskable"][0]].tolist()) == \
        ["a", "b", "Ġ", "c", "d"]
    assert batch["maskable"][1].sum() == 1 and not bool(batch["maskable"][:, :4].any())
    frame = pd.DataFrame({"id": ["x", "y"], "text": ["ab cd", "e f"], "label": ["pos", "neg"]})
    out = generate_pseudo_samples(model, tok, frame, None, ids, GeneratorConfig(),
                                  plan_per_sample(frame, 2, [24, 32]), seed=0)
    assert len(out) == 4 and (out["mask_ratio"] > 0).all()
    assert not out["text"].str.contains("<s>|</s>|<mask>|<label:").any()
