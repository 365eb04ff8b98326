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
