"""The sentence encoder ignores padding; the context is causal; the model trains one step."""

from __future__ import annotations

import torch

from cpc.text.config import TextModelConfig
from cpc.text.model import CPCText, SentenceEncoder


def _cfg(**kw: int | str) -> TextModelConfig:
    base = dict(vocab_size=40, embed_dim=8, z_dim=6, context_dim=5, kernel_size=3)
    return TextModelConfig(**{**base, **kw})


def test_masked_mean_pool_ignores_padding_and_equals_conv1d_per_sentence() -> None:
    torch.manual_seed(0)
    enc = SentenceEncoder(_cfg())
    lengths = torch.tensor([7, 3, 1, 5])
    tokens = torch.randint(2, 42, (4, 7))
    z = enc(tokens, lengths)
    # Garbage (real word ids) past each length and 5 more padding columns change nothing.
    longer = torch.cat([tokens, torch.randint(2, 42, (4, 5))], dim=1)
    assert torch.allclose(enc(longer, lengths), z, atol=1e-6)
    # Reference: Conv1d on each sentence alone (zero padding at its edges), ReLU, mean.
    for i, n in enumerate(lengths.tolist()):
        e = enc.embedding(tokens[i : i + 1, :n]).transpose(1, 2)
        ref = torch.relu(enc.conv(e)).mean(2)[0]
        assert torch.allclose(z[i], ref, atol=1e-6)


def test_padding_id_rows_do_not_leak_even_with_nonzero_embeddings() -> None:
    torch.manual_seed(1)
    enc = SentenceEncoder(_cfg(kernel_size=5))
    with torch.no_grad():
        enc.embedding.weight[0] = 100.0  # a padding row that is not zero
    tokens = torch.tensor([[5, 6, 0, 0, 0, 0]])
    z = enc(tokens, torch.tensor([2]))
    assert torch.allclose(z, enc(tokens[:, :2], torch.tensor([2])), atol=1e-6)


def test_context_is_causal_a_future_sentence_never_changes_it() -> None:
    torch.manual_seed(2)
    model = CPCText(_cfg())
    tokens = torch.randint(2, 42, (2, 9, 6))
    lengths = torch.full((2, 9), 6)
    c = model.context(model.encode(tokens, lengths))
    changed = tokens.clone()
    changed[:, 5:] = torch.randint(2, 42, (2, 4, 6))  # sentences 5..8 replaced
    c2 = model.context(model.encode(changed, lengths))
    assert torch.equal(c[:, :5], c2[:, :5])
    assert not torch.allclose(c[:, 5:], c2[:, 5:])
    # and no gradient flows from c_t to any later sentence's embedding
    z = model.encode(tokens, lengths).detach().requires_grad_(True)
    model.context(z)[:, 3].sum().backward()
    assert torch.count_nonzero(z.grad[:, 4:]) == 0
    assert torch.count_nonzero(z.grad[:, :4]) > 0


def test_forward_gives_the_infonce_loss_of_all_pairs() -> None:
    torch.manual_seed(3)
    model = CPCText(_cfg())
    batch = {"tokens": torch.randint(2, 42, (4, 9, 5)), "lengths": torch.randint(1, 6, (4, 9))}
    out = model(batch)
    assert out["accuracy"].shape == (3,)
    # untrained: about log(36 candidates); finite and differentiable
    assert 2.0 < float(out["loss"].detach()) < 6.0
    out["loss"].backward()
    assert model.encoder.conv.weight.grad is not None
    # same_group: only windows of the same book are negatives; one book per window here
    model = CPCText(_cfg(negatives="same_group"))
    same = model({**batch, "groups": torch.tensor([0, 1, 2, 3])})
    alone = [
        model(
            {
                "tokens": batch["tokens"][i : i + 1],
                "lengths": batch["lengths"][i : i + 1],
                "groups": torch.tensor([i]),
            }
        )
        for i in range(4)
    ]
    assert torch.allclose(same["loss"], torch.stack([a["loss"] for a in alone]).mean(), atol=1e-5)


def test_word_dropout_replaces_real_tokens_only_and_repeats_for_a_seed() -> None:
    from cpc.text.model import drop_words
    from cpc.text.vocab import PAD, UNK

    tokens = torch.randint(2, 42, (64, 9, 20))
    tokens[:, :, 15:] = PAD
    a = drop_words(tokens, 0.25, torch.Generator().manual_seed(5))
    b = drop_words(tokens, 0.25, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(a[:, :, 15:], tokens[:, :, 15:])  # padding stays padding
    changed = a != tokens
    assert torch.all(a[changed] == UNK)
    share = float(changed[:, :, :15].float().mean())
    assert 0.23 < share < 0.27
    assert torch.equal(drop_words(tokens, 0.0), tokens)


def test_word_dropout_applies_in_training_only() -> None:
    torch.manual_seed(3)
    model = CPCText(_cfg(word_dropout=0.5))
    batch = {"tokens": torch.randint(2, 42, (4, 9, 5)), "lengths": torch.randint(1, 6, (4, 9))}
    model.eval()
    e1 = model(batch, torch.Generator().manual_seed(1))["loss"]
    e2 = model(batch, torch.Generator().manual_seed(2))["loss"]
    assert torch.equal(e1, e2)  # evaluation: nothing dropped, the generator is irrelevant
    model.train()
    t1 = model(batch, torch.Generator().manual_seed(1))["loss"]
    t2 = model(batch, torch.Generator().manual_seed(2))["loss"]
    assert not torch.equal(t1, t2)
    assert torch.equal(t1, model(batch, torch.Generator().manual_seed(1))["loss"])


def test_target_head_is_used_by_the_loss_only() -> None:
    torch.manual_seed(3)
    model = CPCText(_cfg(target_head="mlp"))
    batch = {"tokens": torch.randint(2, 42, (4, 9, 5)), "lengths": torch.randint(1, 6, (4, 9))}
    z = model.encode(batch["tokens"], batch["lengths"])
    expected = model.loss(model.context(z), model.head(z))["loss"]
    assert torch.allclose(model(batch)["loss"], expected)
    model(batch)["loss"].backward()
    assert model.head[0].weight.grad is not None
    # the encoder starts as without a head (built first, same seed): the random-init row
    # of the evaluation is the same model
    torch.manual_seed(3)
    plain = CPCText(_cfg())
    assert torch.equal(plain.encoder.conv.weight, model.encoder.conv.weight)


def test_bad_head_or_word_dropout_is_refused_naming_the_option() -> None:
    import pytest

    from cpc.config import ConfigError
    from cpc.text.config import load_train_config

    with pytest.raises(ConfigError, match="model.target_head must be none or mlp"):
        load_train_config(None, ["model.target_head=linear"])
    with pytest.raises(ConfigError, match=r"model.word_dropout must be in \[0, 1\)"):
        load_train_config(None, ["model.word_dropout=1.0"])
    assert load_train_config(None, ["model.word_dropout=0.1"]).model.word_dropout == 0.1
