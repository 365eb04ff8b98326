"""Stage 0: an ILSVRC-2012-style image tree -> validated manifests, and the embedded
Fashion-MNIST written in that layout.

Input layout (``data_dir``)::

    train/<wnid>/*.JPEG          one folder per class (the class list: sorted folder names)
    val/<wnid>/*.JPEG            per-class folders, or
    val/*.JPEG                   flat, labelled by the devkit (``devkit_dir``):
                                 data/ILSVRC2012_validation_ground_truth.txt (one ILSVRC2012_ID
                                 per line, for the sorted val file names) and data/meta.mat
                                 (ILSVRC2012_ID -> wnid)

Any file Pillow decodes counts (``.JPEG``/``.jpg``/``.jpeg``/``.png``, any case). Every image
is decoded in full: unreadable or truncated ones are counted and named, and stop the stage
(:class:`ImageDataError`) unless ``skip_bad`` is set, in which case they are left out of the
manifest and listed in ``bad_<split>.txt``. A class folder without images, or a val class
missing from train, is an error that names the folder.

Outputs (``out_dir``): ``classes.txt`` (``<index> <wnid>`` per line), ``train.tsv`` and
``val.tsv`` (``# root <absolute data dir>`` then ``<path relative to root>\\t<class index>``
per image, sorted by path), ``info.json`` (counts, per-class counts, bad images, the
manifests' sha256). All written atomically.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import struct
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cpc.io import Pathlike, sha256_file, write_json_atomic, write_text_atomic

EXTENSIONS = (".jpeg", ".jpg", ".png")
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
META = "data/meta.mat"


class ImageDataError(ValueError):
    """Bad input images or layout (the message names the file and the fix)."""


@dataclass
class Manifest:
    """Images of one split: ``root``, ``paths`` (relative to root) and ``labels``."""

    root: Path
    paths: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def full_path(self, i: int) -> str:
        return str(self.root / self.paths[i])


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def check_image(path: str) -> str | None:
    """None if Pillow decodes ``path`` in full, else the reason (truncated, unreadable)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.width < 1 or im.height < 1:
                return "empty image"
    except Exception as e:  # noqa: BLE001 - any decoding failure is reported by name
        return f"{type(e).__name__}: {e}"
    return None


def _devkit_labels(val_files: list[Path], devkit: Path, wnids: list[str]) -> list[str]:
    """The wnid of each flat val file from the devkit's ground truth and meta.mat."""
    from scipy.io import loadmat

    gt, meta = devkit / GROUND_TRUTH, devkit / META
    for f in (gt, meta):
        if not f.is_file():
            raise ImageDataError(
                f"{f} does not exist: a flat val/ needs the ILSVRC2012 devkit (--devkit-dir "
                "holding data/meta.mat and data/ILSVRC2012_validation_ground_truth.txt), or "
                "val/ arranged in per-class folders"
            )
    try:
        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        id_to_wnid = {int(s[0]): str(s[1]) for s in synsets}
    except Exception as e:  # noqa: BLE001 - scipy raises several types for a bad file
        raise ImageDataError(
            f"{meta}: not a readable devkit meta.mat with a 'synsets' table "
            f"({type(e).__name__}: {e}); restore it from ILSVRC2012_devkit_t12.tar.gz"
        ) from e
    ids = [int(x) for x in gt.read_text().split()]
    if len(ids) != len(val_files):
        raise ImageDataError(
            f"{gt} has {len(ids)} labels but {len(val_files)} images are in the flat val/ "
            "folder; the ground truth lists one label per image in sorted file-name order"
        )
    out = []
    for f, i in zip(val_files, ids):
        w = id_to_wnid.get(i)
        if w not in wnids:
            raise ImageDataError(f"{f.name}: ILSVRC2012_ID {i} ({w}) is not a class of train/")
        out.append(w)
    return out


def scan_split(
    data_dir: Path, split: str, wnids: list[str] | None, devkit: Path | None
) -> list[tuple[str, str]]:
    """``[(path relative to data_dir, wnid)]`` of a split (see the module docstring)."""
    root = data_dir / split
    if not root.is_dir():
        raise ImageDataError(f"{root} does not exist: --data-dir must hold train/ and val/")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if folders:
        items = []
        for folder in folders:
            files = _images(folder)
            if not files:
                raise ImageDataError(
                    f"{folder}: class folder without images ({', '.join(EXTENSIONS)}); remove "
                    "it or restore its images"
                )
            if wnids is not None and folder.name not in wnids:
                raise ImageDataError(f"{folder}: class {folder.name} has no folder in train/")
            items += [(str(f.relative_to(data_dir)), folder.name) for f in files]
        return items
    files = _images(root)
    if not files:
        raise ImageDataError(f"{root}: no class folders and no images")
    if wnids is None:
        raise ImageDataError(f"{root}: train/ must have one folder per class")
    labels = _devkit_labels(files, devkit or data_dir, wnids)
    return [(str(f.relative_to(data_dir)), w) for f, w in zip(files, labels)]


def _check_all(paths: list[str], num_jobs: int, desc: str) -> list[str | None]:
    chunk = max(1, min(256, len(paths) // (4 * max(num_jobs, 1)) or 1))
    if num_jobs <= 1:
        return [check_image(p) for p in tqdm(paths, desc=desc, unit="img", mininterval=2)]
    with ProcessPoolExecutor(num_jobs) as ex:
        it = ex.map(check_image, paths, chunksize=chunk)
        return list(tqdm(it, total=len(paths), desc=desc, unit="img", mininterval=2))


def _write_manifest(path: Path, root: Path, items: list[tuple[str, int]]) -> None:
    lines = [f"# root {root}"] + [f"{p}\t{y}" for p, y in items]
    write_text_atomic(path, "\n".join(lines) + "\n")


def prepare_manifests(
    data_dir: Pathlike,
    out_dir: Pathlike,
    devkit_dir: Pathlike | None = None,
    skip_bad: bool = False,
    num_jobs: int = 1,
) -> dict:
    """Validate the tree and write the manifests (module docstring). Returns info.json."""
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir)
    train = scan_split(data_dir, "train", None, None)
    wnids = sorted({w for _, w in train})
    val = scan_split(data_dir, "val", wnids, Path(devkit_dir) if devkit_dir else None)
    index = {w: i for i, w in enumerate(wnids)}
    info: dict = {"data_dir": str(data_dir), "num_classes": len(wnids)}
    for split, items in (("train", train), ("val", val)):
        reasons = _check_all([str(data_dir / p) for p, _ in items], num_jobs, f"check {split}")
        bad = [(p, r) for (p, _), r in zip(items, reasons) if r is not None]
        if bad:
            names = "; ".join(f"{p} ({r})" for p, r in bad[:5])
            msg = f"{len(bad)} of {len(items)} {split} images cannot be decoded: {names}" + (
                f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            )
            write_text_atomic(out_dir / f"bad_{split}.txt", "".join(f"{p}\t{r}\n" for p, r in bad))
            if not skip_bad:
                raise ImageDataError(
                    f"{msg}. Listed in {out_dir / f'bad_{split}.txt'}; replace them, or pass "
                    "--skip-bad true to leave them out of the manifest"
                )
            logging.warning(f"{msg}: left out of the manifest (--skip-bad true)")
        bad_set = {p for p, _ in bad}
        kept = [(p, index[w]) for p, w in items if p not in bad_set]
        counts = Counter(y for _, y in kept)
        empty = [wnids[i] for i in range(len(wnids)) if counts[i] == 0 and split == "train"]
        if empty:
            raise ImageDataError(f"{data_dir}/train: no usable images for class(es) {empty}")
        _write_manifest(out_dir / f"{split}.tsv", data_dir, kept)
        info[split] = {
            "images": len(kept),
            "bad_images": len(bad),
            "per_class": {wnids[i]: counts[i] for i in range(len(wnids))},
            "sha256": sha256_file(out_dir / f"{split}.tsv"),
        }
        logging.info(f"{split}: {len(kept)} images, {len(bad)} bad, {len(counts)} classes")
    write_text_atomic(out_dir / "classes.txt", "".join(f"{i} {w}\n" for i, w in enumerate(wnids)))
    write_json_atomic(out_dir / "info.json", info)
    return info


def read_classes(path: Pathlike) -> list[str]:
    """Class names of ``classes.txt``, in index order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run stage 0 (manifests) first")
    return [line.split(maxsplit=1)[1] for line in path.read_text().splitlines() if line.strip()]


def read_manifest(path: Pathlike) -> Manifest:
    """A ``train.tsv``/``val.tsv`` written by :func:`prepare_manifests`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run stage 0 (manifests) first")
    lines = path.read_text().splitlines()
    if not lines or not lines[0].startswith("# root "):
        raise ImageDataError(f"{path}: not a manifest of stage 0 (no '# root' line); rerun it")
    root = Path(lines[0][len("# root ") :])
    paths, labels = [], []
    for n, line in enumerate(lines[1:], start=2):
        try:
            p, y = line.split("\t")
            labels.append(int(y))
        except ValueError:
            raise ImageDataError(f"{path}:{n}: expected '<path>\\t<class index>'") from None
        paths.append(p)
    return Manifest(root, paths, np.asarray(labels, dtype=np.int64))


def manifest_signature(path: Pathlike) -> str:
    """sha256 of a manifest's image list and labels, not of its root: the same images
    moved elsewhere give the same signature."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.readline()
        for line in f:
            h.update(line)
    return h.hexdigest()


# ---- the embedded corpus: Fashion-MNIST as an ImageNet-style tree ----

FASHION_CLASSES = (
    "tshirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}


def read_idx(path: Pathlike, expect_dims: int) -> np.ndarray:
    """An IDX file (gzip'd or not) as a uint8 array; ImageDataError naming the file if its
    header or size is wrong."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ImageDataError(f"{path}: unreadable ({e}); reinstall dataset-fashion-mnist") from e
    if len(data) < 4 + 4 * expect_dims or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ImageDataError(f"{path}: not an unsigned-byte IDX file")
    if data[3] != expect_dims:
        raise ImageDataError(f"{path}: {data[3]} dimensions, expected {expect_dims}")
    dims = struct.unpack(f">{expect_dims}I", data[4 : 4 + 4 * expect_dims])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * expect_dims)
    if body.size != int(np.prod(dims)):
        raise ImageDataError(f"{path}: header says {dims} but holds {body.size} bytes")
    return body.reshape(dims)


def load_fashion_mnist(src: Pathlike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` and labels ``(N,)`` of a split, checked by content: shapes,
    label range and the 6,000 / 1,000 images per class of the published data set."""
    src = Path(src)
    img_name, lab_name, n = FASHION_FILES[split]
    images, labels = read_idx(src / img_name, 3), read_idx(src / lab_name, 1)
    if images.shape != (n, 28, 28) or labels.shape != (n,):
        raise ImageDataError(
            f"{src}: {split} has images {images.shape} and labels {labels.shape}, expected "
            f"({n}, 28, 28) and ({n},)"
        )
    counts = np.bincount(labels, minlength=10)
    if len(counts) != 10 or not np.all(counts == n // 10):
        raise ImageDataError(
            f"{src / lab_name}: per-class counts {counts.tolist()}, expected {n // 10} each"
        )
    return images, labels


def _write_pngs(args: tuple[str, np.ndarray, list[str]]) -> None:
    folder, images, names = args
    for im, name in zip(images, names):
        Image.fromarray(im, mode="L").save(os.path.join(folder, name), format="PNG")


def build_fashion_tree(
    src: Pathlike, out_dir: Pathlike, per_class: tuple[int, int] = (0, 0), num_jobs: int = 1
) -> dict:
    """Write Fashion-MNIST as ``out_dir/{train,val}/<index>_<class>/<split>_<n>.png``
    (lossless PNG; <n> the image's index in its IDX file); ``per_class`` = (train, val): only
    the first that many images of each class (0: all). Deterministic; built in a temporary
    directory and renamed into place; a finished tree whose ``source.json`` matches the
    source files and ``per_class`` is kept as is. Returns ``source.json``."""
    src, out_dir = Path(src), Path(out_dir)
    source: dict = {
        name: sha256_file(src / name) for files in FASHION_FILES.values() for name in files[:2]
    }
    source["format"] = "png-v1"
    source["per_class"] = list(per_class)
    marker = out_dir / "source.json"
    if marker.is_file():
        import json

        if json.loads(marker.read_text()) == source:
            logging.info(f"{out_dir}: Fashion-MNIST tree already written")
            return source
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    jobs = []
    for split, limit in zip(FASHION_FILES, per_class):
        images, labels = load_fashion_mnist(src, split)
        for c, cname in enumerate(FASHION_CLASSES):
            folder = tmp / split / f"{c}_{cname}"
            folder.mkdir(parents=True)
            idx = np.flatnonzero(labels == c)
            if limit > 0:
                idx = idx[:limit]
            for part in np.array_split(idx, max(1, num_jobs)):
                jobs.append((str(folder), images[part], [f"{split}_{i:05d}.png" for i in part]))
    if num_jobs > 1:
        with ProcessPoolExecutor(num_jobs) as ex:
            list(tqdm(ex.map(_write_pngs, jobs), total=len(jobs), desc="write PNGs", unit="part"))
    else:
        for j in tqdm(jobs, desc="write PNGs", unit="part"):
            _write_pngs(j)
    write_json_atomic(tmp / "source.json", source)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return source
