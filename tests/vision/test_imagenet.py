"""Stage 0: the ILSVRC-2012 layout, image validation, the embedded Fashion-MNIST tree; and
the training batches built from a manifest (split- and resume-exact)."""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cpc.vision.config import VisionDataConfig
from cpc.vision.data import PatchTrainData, split_holdout
from cpc.vision.imagenet import (
    ImageDataError,
    build_fashion_tree,
    load_fashion_mnist,
    manifest_signature,
    prepare_manifests,
    read_classes,
    read_manifest,
)
from tests.needs import require

WNIDS = ["n01440764", "n01443537", "n01484850"]


def make_tree(root: Path, per_class: int = 4, flat_val: bool = False) -> Path:
    """A small ILSVRC-style tree of JPEGs (3 classes)."""
    rng = np.random.default_rng(0)
    for c, w in enumerate(WNIDS):
        for split, n in (("train", per_class), ("val", 2)):
            d = root / split / ("" if split == "val" and flat_val else w)
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 255, (20 + c, 24, 3), dtype=np.uint8)
                name = f"ILSVRC2012_val_{c * 2 + i + 1:08d}" if split == "val" else f"{w}_{i}"
                Image.fromarray(arr).save(d / f"{name}.JPEG", quality=90)
    return root


def test_manifests_of_a_tree_with_per_class_val(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "in")
    info = prepare_manifests(root, tmp_path / "m")
    assert read_classes(tmp_path / "m/classes.txt") == WNIDS
    train = read_manifest(tmp_path / "m/train.tsv")
    assert len(train) == 12 and train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert train.paths[5] == f"train/{WNIDS[1]}/{WNIDS[1]}_1.JPEG"
    assert Path(train.full_path(0)).is_file()
    assert info["val"]["images"] == 6 and info["val"]["per_class"][WNIDS[2]] == 2
    # the signature is the image list and labels, not where the tree lives
    moved = tmp_path / "moved"
    root.rename(moved)
    prepare_manifests(moved, tmp_path / "m2")
    assert manifest_signature(tmp_path / "m/train.tsv") == manifest_signature(
        tmp_path / "m2/train.tsv"
    )


def test_flat_val_labelled_by_the_devkit(tmp_path: Path) -> None:
    from scipy.io import savemat

    root = make_tree(tmp_path / "in", flat_val=True)
    devkit = tmp_path / "devkit"
    (devkit / "data").mkdir(parents=True)
    # ILSVRC2012_IDs are not in wnid order: id 1 is the third class here
    order = [WNIDS[2], WNIDS[0], WNIDS[1]]
    synsets = np.array(
        [(i + 1, w, f"class {w}", 0) for i, w in enumerate(order)],
        dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")],
    )
    savemat(devkit / "data/meta.mat", {"synsets": synsets})
    # val images 1-2 are class 0, 3-4 class 1, 5-6 class 2 (make_tree's naming)
    ids = [order.index(WNIDS[c]) + 1 for c in (0, 0, 1, 1, 2, 2)]
    (devkit / "data/ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{i}\n" for i in ids)
    )
    prepare_manifests(root, tmp_path / "m", devkit_dir=devkit)
    val = read_manifest(tmp_path / "m/val.tsv")
    assert val.labels.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ImageDataError, match="devkit"):
        prepare_manifests(root, tmp_path / "m3")


def _local_script(name: str):
    """A script of egs/imagenet/local as a module (its main() called in this process)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "egs/imagenet/local" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"imagenet_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("content", [b"", b"MATLAB 5.0 MAT-file, truncated\x00\x01"])
def test_corrupt_devkit_meta_mat_is_one_clear_line(
    tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture
) -> None:
    root = make_tree(tmp_path / "in", flat_val=True)
    devkit = tmp_path / "devkit"
    (devkit / "data").mkdir(parents=True)
    (devkit / "data/meta.mat").write_bytes(content)
    (devkit / "data/ILSVRC2012_validation_ground_truth.txt").write_text("1\n" * 6)
    with pytest.raises(ImageDataError, match=r"meta\.mat: not a readable devkit meta\.mat"):
        prepare_manifests(root, tmp_path / "m", devkit_dir=devkit)
    cli = _local_script("prepare_manifests")
    argv = ["--data-dir", str(root), "--output-dir", str(tmp_path / "m"), "--devkit-dir"]
    assert cli.main([*argv, str(devkit)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert f"{devkit / 'data/meta.mat'}: not a readable" in err[0]
    assert "ILSVRC2012_devkit_t12.tar.gz" in err[0]


def test_bench_data_names_a_missing_manifest_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bench = _local_script("bench_data")
    conf = Path(__file__).resolve().parents[2] / "egs/imagenet/conf/cpc_tiny.yaml"
    missing = tmp_path / "no_such_dir"
    assert bench.main(["--manifest-dir", str(missing), "--config", str(conf)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--manifest-dir {missing} does not exist; run stage 0" in err[0]
    (tmp_path / "empty").mkdir()
    assert bench.main(["--manifest-dir", str(tmp_path / "empty"), "--config", str(conf)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.tsv does not exist; run stage 0" in err[0]


def test_corrupted_jpeg_is_named_and_never_silently_skipped(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "in")
    bad = root / "train" / WNIDS[1] / f"{WNIDS[1]}_2.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    (root / "train" / WNIDS[0] / "garbage.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ImageDataError) as e:
        prepare_manifests(root, tmp_path / "m")
    msg = str(e.value)
    assert "2 of 13 train images cannot be decoded" in msg
    assert bad.name in msg and "garbage.jpg" in msg and "--skip-bad true" in msg
    assert not (tmp_path / "m/train.tsv").exists()
    info = prepare_manifests(root, tmp_path / "m", skip_bad=True)
    assert info["train"]["images"] == 11 and info["train"]["bad_images"] == 2
    listed = (tmp_path / "m/bad_train.txt").read_text()
    assert bad.name in listed and "garbage.jpg" in listed
    assert bad.name not in (tmp_path / "m/train.tsv").read_text()


def test_empty_class_folder_and_unknown_val_class(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "in")
    empty = root / "train" / "n09999999"
    empty.mkdir()
    with pytest.raises(ImageDataError, match="n09999999: class folder without images"):
        prepare_manifests(root, tmp_path / "m")
    empty.rmdir()
    (root / "val" / "n08888888").mkdir()
    Image.new("RGB", (8, 8)).save(root / "val" / "n08888888" / "x.JPEG")
    with pytest.raises(ImageDataError, match="n08888888 has no folder in train"):
        prepare_manifests(root, tmp_path / "m")


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_is_checked_by_content(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_idx(src / "t10k-images-idx3-ubyte.gz", np.zeros((10000, 28, 28)))
    write_idx(src / "t10k-labels-idx1-ubyte.gz", np.repeat(np.arange(10), 1000))
    images, labels = load_fashion_mnist(src, "val")
    assert images.shape == (10000, 28, 28) and labels[-1] == 9
    write_idx(src / "t10k-labels-idx1-ubyte.gz", np.zeros(10000))
    with pytest.raises(ImageDataError, match="per-class counts"):
        load_fashion_mnist(src, "val")
    (src / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x03" + b"\0" * 20))
    with pytest.raises(ImageDataError, match="header says"):
        load_fashion_mnist(src, "val")


def test_embedded_tree_is_deterministic(tmp_path: Path) -> None:
    share = Path(sys.prefix) / "share" / "fashion-mnist"
    require((share / "train-images-idx3-ubyte.gz").is_file(), f"Fashion-MNIST in {share}")
    a = build_fashion_tree(share, tmp_path / "a", per_class=(3, 2))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 50 and str(files[0]) == "train/0_tshirt_top/train_00001.png"
    im = np.asarray(Image.open(tmp_path / "a" / files[0]))
    images, _ = load_fashion_mnist(share, "train")
    assert np.array_equal(im, images[1])  # lossless: the IDX pixels exactly
    b = build_fashion_tree(share, tmp_path / "b", per_class=(3, 2))
    assert a == b
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def batches(data: PatchTrainData, position, rank, world, accum, n):
    it = data.batches(position, rank, world, accum)
    out = [next(it) for _ in range(n)]
    it.close()
    return out


def test_global_batches_do_not_depend_on_the_split_and_resume_exactly(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "in", per_class=6)
    prepare_manifests(root, tmp_path / "m")
    man = read_manifest(tmp_path / "m/train.tsv")
    cfg = VisionDataConfig(resize=36, crop=32, patch=8, stride=4, subcrop=6, batch_size=2)
    cfg.num_workers = 0
    train_idx, valid_idx = split_holdout(len(man), 4)
    assert len(train_idx) == 14 and not set(train_idx) & set(valid_idx)
    data = PatchTrainData(man, train_idx, cfg, seed=3)
    one = batches(data, None, 0, 1, 2, 5)  # 1 process, accumulation 2: 3 steps per epoch
    assert [p for _, p in one][2:4] == [{"epoch": 1, "batch": 0}, {"epoch": 1, "batch": 1}]
    r0 = batches(data, None, 0, 2, 1, 5)
    r1 = batches(data, None, 1, 2, 1, 5)
    for (b, _), (b0, _), (b1, _) in zip(one, r0, r1):
        assert torch.equal(b["patches"], torch.cat([b0["patches"], b1["patches"]]))
        assert torch.equal(b["label"], torch.cat([b0["label"], b1["label"]]))
    resumed = batches(data, one[1][1], 0, 1, 2, 3)
    for (b, p), (c, q) in zip(one[2:], resumed):
        assert torch.equal(b["patches"], c["patches"]) and p == q
    assert not torch.equal(one[0][0]["patches"], one[3][0]["patches"][: len(one[0][0]["patches"])])
    cfg.num_workers = 1  # decoded in a worker: the same batches
    worker = batches(PatchTrainData(man, train_idx, cfg, seed=3), None, 0, 1, 2, 2)
    assert torch.equal(worker[1][0]["patches"], one[1][0]["patches"])
