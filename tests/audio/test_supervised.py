"""The supervised baselines of the paper's Table 1 (``model.objective`` phone / speaker): the
labels line up with the frames the model trains on, the loss ignores what it must, and the
config and data refuse what cannot work, by name."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soundfile as sf
import torch

from cpc.audio.config import AudioDataConfig, load_train_config
from cpc.audio.data import AudioDataError, AudioWindowData, ValidWindows, window_frame_labels
from cpc.audio.domain import build_data
from cpc.audio.model import build_cpc_model
from cpc.config import ConfigError
from tests.factories import TINY_MODEL, make_labelled_manifests

W = 3200  # 20 frames


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Stage 0-1 manifests of a tiny corpus whose audio spells its labels: every sample of
    10 ms frame i is labels[i] / 64 (exact in 16-bit FLAC)."""
    root = tmp_path_factory.mktemp("sup")
    manifests, _, corpus = make_labelled_manifests(root, speakers=3, chapters=2, utts=3, seed=5)
    for utt in corpus.utt_ids:
        path = corpus.flac(utt)
        n = sf.info(str(path)).frames
        lab = corpus.labels[utt]
        x = lab[np.minimum(np.arange(n) // 160, len(lab) - 1)] / 64.0
        sf.write(path, x.astype(np.float32), 16000, subtype="PCM_16")
    return manifests, corpus


def test_window_frame_labels_take_the_frame_holding_the_centre() -> None:
    lab = np.arange(10)
    assert window_frame_labels(lab, 0, 3).tolist() == [0, 1, 2]
    assert window_frame_labels(lab, 79, 2).tolist() == [0, 1]  # centre 159 -> frame 0
    assert window_frame_labels(lab, 80, 2).tolist() == [1, 2]  # centre 160 -> frame 1
    assert window_frame_labels(lab, 1500, 3).tolist() == [9, 9, 9]  # past the end: the last
    assert window_frame_labels(np.zeros(0, int), 0, 2).tolist() == [-100, -100]


def test_phone_labels_line_up_with_the_frames_trained_on(labelled) -> None:
    from cpc.audio.data import load_train_cuts

    manifests, _ = labelled
    cuts = load_train_cuts(manifests)
    cfg = AudioDataConfig(window=W, batch_size=4, num_workers=0)
    data = AudioWindowData(cuts, cfg, seed=3, with_labels=True)
    model = build_cpc_model({**TINY_MODEL, "objective": "phone"})
    checked = 0
    for batch, _ in itertools.islice(data.batches(None, 0, 1, 1), 6):
        wave, phone = batch["wave"].numpy(), batch["phone"].numpy()
        t = model.num_frames(wave.shape[1])
        assert phone.shape == (wave.shape[0], t)  # one label per frame of the model's output
        # frame f of the window covers samples [160 f, 160 f + 160): its centre carries the
        # label of the cut frame it lies in (window starts are not multiples of 160)
        centre = np.rint(wave[:, 80::160][:, :t] * 64).astype(int)
        np.testing.assert_array_equal(phone, centre)
        checked += phone.size
    assert checked >= 6 * 4 * 20
    # without with_labels, no labels are read
    ((plain, _),) = itertools.islice(AudioWindowData(cuts, cfg, seed=3).batches(None, 0, 1, 1), 1)
    assert "phone" not in plain


def test_supervised_loss_ignores_padding_and_unknown_classes() -> None:
    torch.manual_seed(0)
    model = build_cpc_model({**TINY_MODEL, "objective": "phone"})
    assert not hasattr(model, "infonce") and model.head.out_features == 41
    wave = torch.randn(2, W)
    phone = torch.randint(0, 41, (2, 20))
    phone[1, 5] = 99  # outside the head: ignored
    lengths = torch.tensor([W, 160 * 12])  # row 1 has 12 valid frames
    y = model.frame_targets({"phone": phone}, 20, torch.div(lengths, 160, rounding_mode="floor"))
    assert (y[0] == phone[0]).all()
    assert (y[1, 12:] == -100).all() and y[1, 5] == -100 and (y[1, :5] == phone[1, :5]).all()
    out = model({"wave": wave, "phone": phone, "lengths": lengths})
    assert out["accuracy"].shape == (1,) and torch.isfinite(out["loss"])
    # the loss is the mean cross-entropy over the counted frames only
    c = model.context(model.encode(wave, lengths))
    logits = model.head(c)
    keep = y >= 0
    ref = torch.nn.functional.cross_entropy(logits[keep], y[keep])
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-5)
    # speaker: every frame of a window has the window's speaker
    spk = build_cpc_model({**TINY_MODEL, "objective": "speaker", "num_classes": 3})
    ys = spk.frame_targets({"group": torch.tensor([2, 0])}, 20, None)
    assert (ys[0] == 2).all() and (ys[1] == 0).all()


def test_config_and_data_refuse_what_cannot_work(labelled, tmp_path) -> None:
    manifests, corpus = labelled
    with pytest.raises(ConfigError, match="model.num_classes"):
        load_train_config(None, ["model.objective=speaker"])
    base = ["data.window=3200", "data.batch_size=4", "data.num_workers=0"]
    base += [f"model.{k}={v}" for k, v in TINY_MODEL.items()]
    cfg = load_train_config(None, [*base, "model.objective=speaker", "model.num_classes=5"])
    with pytest.raises(AudioDataError, match="model.num_classes=3"):
        build_data(cfg, manifests)
    cfg = load_train_config(None, [*base, "model.objective=speaker", "model.num_classes=3"])
    pd = build_data(cfg, manifests)
    assert pd.train.speakers == sorted(corpus.speakers)
    # validation windows number the speakers as training does
    from cpc.audio.data import load_train_cuts

    cuts = list(load_train_cuts(manifests))
    index = {s: i for i, s in enumerate(reversed(sorted(corpus.speakers)))}
    vw = ValidWindows(cuts, cfg.data, speaker_index=index)
    for ci, g in enumerate(vw.table.groups):
        assert (
            g == index[cuts[[c.id for c in cuts].index(vw.table.ids[ci])].supervisions[0].speaker]
        )
    # a cut without stage-1 labels is refused by name for the phone objective
    bare = [c for c in cuts[:2]]
    for c in bare:
        c.custom = None
    with pytest.raises(AudioDataError, match=f"cut {bare[0].id} has no phone_labels"):
        AudioWindowData(bare, cfg.data, seed=1, with_labels=True)
