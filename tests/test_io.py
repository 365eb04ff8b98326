"""cpc.io: atomic outputs leave the old file (or none) when the writer fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpc.io import atomic_open, atomic_path, write_json_atomic


def test_atomic_file_replaced_only_on_success(tmp_path: Path) -> None:
    p = tmp_path / "out.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(p) as f:
            f.write("half")
            raise RuntimeError("killed")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["out.txt"]
    with atomic_open(p) as f:
        f.write("new")
    assert p.read_text() == "new"


def test_atomic_directory(tmp_path: Path) -> None:
    d = tmp_path / "dump"
    d.mkdir()
    (d / "a").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(d) as tmp:
            tmp.mkdir()
            (tmp / "b").write_text("half")
            raise KeyboardInterrupt
    assert sorted(x.name for x in d.iterdir()) == ["a"]
    with atomic_path(d) as tmp:
        tmp.mkdir()
        (tmp / "b").write_text("new")
    assert sorted(x.name for x in d.iterdir()) == ["b"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["dump"]


def test_unwritable_destination_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError) as e:
        write_json_atomic(blocker / "sub" / "x.json", {"a": 1})
    assert "file" in str(e.value)


def test_dataclass_from_args_takes_the_options_of_the_same_name() -> None:
    import argparse
    from dataclasses import dataclass

    from cpc.cli import dataclass_from_args

    @dataclass
    class Cfg:
        max_frames: int = 5
        seed: int = 0
        beam: int = 8

    args = argparse.Namespace(max_frames=9, seed=3, output_dir="x")
    assert dataclass_from_args(Cfg, args) == Cfg(max_frames=9, seed=3, beam=8)
    assert dataclass_from_args(Cfg, args, beam=2) == Cfg(max_frames=9, seed=3, beam=2)


def test_positive_int_refuses_zero_and_words() -> None:
    import argparse

    import pytest

    from cpc.cli import positive_int

    assert positive_int("3") == 3
    for bad in ("0", "-2", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="integer >= 1"):
            positive_int(bad)
