"""Stage -1 (cpc/audio/download.py, egs/librispeech100/local/download.py) against archives
served over HTTP on 127.0.0.1 by the test itself: a complete download, an interrupted one
that resumes with a range request, a corrupted archive refused by name; the label files
fetched from a URL and checked by content."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cpc.audio.download import (
    DownloadError,
    archive_url,
    check_labels,
    download_labels,
    download_parts,
    read_checksums,
)
from cpc.audio.librispeech import DataPrepError
from tests.factories import make_tiny_corpus


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files`` ({url path: bytes}) with HTTP range requests; a path in
    ``server.cut_once`` gets only half its body the first time (then the connection drops)."""

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self) -> None:
        srv = self.server
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        srv.requests.append((self.path, start))
        if rng and start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if self.path in srv.cut_once:
            srv.cut_once.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture()
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.cut_once = {}, [], set()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _base(srv: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/mirror"


def _archive(part_src: Path, part: str) -> bytes:
    """A LibriSpeech-layout part as OpenSLR packs it: LibriSpeech/<part>/SPK/CHAP/..."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(part_src, arcname=f"LibriSpeech/{part}")
    return buf.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    return make_tiny_corpus(tmp_path_factory.mktemp("src"), speakers=2, chapters=1, utts=3)


def _serve(srv, corpus, tmp_path: Path, parts=("train-clean-100", "dev-clean")) -> Path:
    """Serve one archive per part (same audio under each name); returns a checksum file."""
    lines = []
    for part in parts:
        data = _archive(corpus.corpus_dir / "train-clean-100", part)
        data += bytes(np.random.default_rng(len(part)).integers(0, 256, 300_000, np.uint8))
        srv.files[f"/mirror/12/{part}.tar.gz"] = data  # padded: big enough to cut in half
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {part}.tar.gz")
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("\n".join(lines) + "\n")
    return sums


def test_complete_then_interrupted_and_resumed(server, corpus, tmp_path: Path) -> None:
    sums = read_checksums(_serve(server, corpus, tmp_path))
    base = _base(server)
    assert archive_url(base + "/", "dev-clean") == f"{base}/12/dev-clean.tar.gz"
    # complete download of one part
    root = download_parts(tmp_path / "dl", ["dev-clean"], base, sums)
    got = sorted(p.name for p in (root / "dev-clean").glob("*/*/*.flac"))
    assert got == sorted(f"{u}.flac" for u in corpus.utt_ids)
    assert (root / "dev-clean" / ".completed").is_file()
    # interrupted: the connection drops half-way; the partial archive is kept ...
    server.cut_once.add("/mirror/12/train-clean-100.tar.gz")
    with pytest.raises(
        DownloadError,
        match=r"ended after \d+ of \d+ bytes\); the \d+ bytes so far are kept: run the stage",
    ):
        download_parts(tmp_path / "dl", ["train-clean-100", "dev-clean"], base, sums)
    size = len(server.files["/mirror/12/train-clean-100.tar.gz"])
    partial = (tmp_path / "dl" / "train-clean-100.tar.gz").stat().st_size
    assert 0 < partial < size
    # ... and the next run continues it with a range request from where it stopped
    server.requests.clear()
    download_parts(tmp_path / "dl", ["train-clean-100", "dev-clean"], base, sums)
    assert ("/mirror/12/train-clean-100.tar.gz", partial) in server.requests
    assert all(p != "/mirror/12/dev-clean.tar.gz" for p, _ in server.requests)  # complete
    assert (root / "train-clean-100" / ".completed").is_file()
    assert (tmp_path / "dl" / "train-clean-100.tar.gz").stat().st_size == size
    n = len(server.requests)
    download_parts(tmp_path / "dl", ["train-clean-100"], base, sums)  # done: nothing fetched
    assert len(server.requests) == n


def test_corrupted_archive_is_refused_by_name(server, corpus, tmp_path: Path) -> None:
    sums = read_checksums(_serve(server, corpus, tmp_path, parts=("dev-clean",)))
    good = server.files["/mirror/12/dev-clean.tar.gz"]
    server.files["/mirror/12/dev-clean.tar.gz"] = good[:1000] + b"X" + good[1001:]
    archive = tmp_path / "dl" / "dev-clean.tar.gz"
    with pytest.raises(DownloadError, match=rf"{archive}: SHA-256 .* moved to {archive}.corrupt"):
        download_parts(tmp_path / "dl", ["dev-clean"], _base(server), sums)
    assert not (tmp_path / "dl" / "LibriSpeech" / "dev-clean").exists()  # never unpacked
    assert (tmp_path / "dl" / "dev-clean.tar.gz.corrupt").is_file() and not archive.exists()
    server.files["/mirror/12/dev-clean.tar.gz"] = good  # the mirror is fixed: a fresh download
    download_parts(tmp_path / "dl", ["dev-clean"], _base(server), sums)
    assert (tmp_path / "dl" / "LibriSpeech" / "dev-clean" / ".completed").is_file()
    with pytest.raises(DownloadError, match="unknown LibriSpeech part 'train-clean-99'"):
        download_parts(tmp_path / "dl", ["train-clean-99"], _base(server), sums)
    # the real archives' published checksums are built in
    with pytest.raises(DownloadError, match="downloading .*/12/test-other.tar.gz .* failed"):
        download_parts(tmp_path / "dl", ["test-other"], _base(server))


def test_labels_fetched_and_checked_by_content(server, corpus, tmp_path: Path) -> None:
    for f in corpus.labels_dir.iterdir():
        server.files[f"/labels/{f.name}"] = f.read_bytes()
    url = f"http://127.0.0.1:{server.server_address[1]}/labels"
    labels = download_labels(url, tmp_path / "labels")
    sizes = check_labels(labels, corpus.corpus_dir / "train-clean-100")
    assert sizes["num_classes"] == 41 and sizes["corpus_utterances"] == len(corpus.utt_ids)
    assert sizes["train_utterances"] == len(corpus.splits["train"])
    assert sizes["test_utterances"] == len(corpus.splits["test"])
    assert sizes["corpus_share_in_splits"] == 1.0
    # a split utterance the corpus does not have: refused, naming the file
    extra = "9999-1-0000"
    (labels / "test_split.txt").write_text((labels / "test_split.txt").read_text() + extra + "\n")
    with pytest.raises(DataPrepError, match=r"test_split.txt: 1 of .* have no line in"):
        check_labels(labels, corpus.corpus_dir / "train-clean-100")
    with (labels / "converted_aligned_phones.txt").open("a") as f:
        f.write(f"{extra} 0 0 0\n")
    with pytest.raises(DataPrepError, match=rf"1 of .* have no audio in .*e\.g\. {extra}"):
        check_labels(labels, corpus.corpus_dir / "train-clean-100")
    with pytest.raises(DownloadError, match="labels/converted_aligned_phones.txt failed"):
        download_labels(url + "/../nolabels/labels", tmp_path / "l2")


def test_stage_cli_downloads_checks_labels_and_reports(server, corpus, tmp_path: Path) -> None:
    """egs/librispeech100/local/download.py, as stage -1 runs it: exit 0 and a report; a
    corrupted archive: exit 1 with one line naming it, no traceback."""
    import json
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    sums = _serve(server, corpus, tmp_path, parts=("train-clean-100",))
    for f in corpus.labels_dir.iterdir():
        server.files[f"/labels/{f.name}"] = f.read_bytes()
    port = server.server_address[1]
    cmd = [sys.executable, str(repo / "egs/librispeech100/local/download.py")]
    cmd += ["--target-dir", str(tmp_path / "dl"), "--parts", "train-clean-100"]
    cmd += ["--base-url", _base(server), "--checksums", str(sums)]
    cmd += ["--labels-url", f"http://127.0.0.1:{port}/labels", "--labels-dir"]
    cmd += [str(tmp_path / "dl/cpc_labels"), "--check-labels", "true"]
    r = subprocess.run(
        cmd + ["--report", str(tmp_path / "r.json")], env=env, text=True, capture_output=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["labels"]["train_utterances"] == len(corpus.splits["train"])
    assert report["corpus_dir"] == str(tmp_path / "dl" / "LibriSpeech")
    server.files["/mirror/12/dev-clean.tar.gz"] = b"not a tar.gz at all" * 1000
    bad = cmd[:4] + ["--parts", "dev-clean", "--base-url", _base(server)]  # published sum
    r = subprocess.run(bad, env=env, text=True, capture_output=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{tmp_path / 'dl' / 'dev-clean.tar.gz'}: SHA-256" in r.stderr
