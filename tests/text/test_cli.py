"""Bad command-line input to the recipe's scripts gets one clear line naming the option (or
the file) and the fix, never a traceback."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

LOCAL = Path(__file__).resolve().parents[2] / "egs" / "bookcorpus" / "local"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bookcorpus_{name}", LOCAL / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _usage_error(capsys: pytest.CaptureFixture[str], name: str, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        _script(name).main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("name", "argv"),
    [
        ("make_vocab", ["--output", "OUT/vocab.txt"]),
        ("word2vec", ["--output-dir", "OUT/w2v"]),
    ],
)
def test_missing_text_names_the_file_and_the_stage(
    name: str, argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.replace("OUT", str(tmp_path)) for a in argv]
    assert _script(name).main(["--text", str(tmp_path / "MISSING"), *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert err[0].endswith(
        f"--text {tmp_path / 'MISSING'} does not exist; run stage 0 (corpus) first"
    )
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    ("name", "argv", "expected"),
    [
        ("make_vocab", ["--size", "0"], "argument --size: expected an integer >= 1, got 0"),
        ("word2vec", ["--dim", "0"], "argument --dim: expected an integer >= 1, got 0"),
        ("word2vec", ["--epochs", "-1"], "argument --epochs: expected an integer >= 1, got -1"),
    ],
)
def test_sizes_below_one_are_refused(
    name: str, argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--text", "t.txt", "--output" if name == "make_vocab" else "--output-dir", "o"]
    assert _usage_error(capsys, name, base + argv).endswith(expected)


SENTEVAL = ["--senteval-dir", "s", "--output-dir", "o", "--vocab", "v", "--word2vec-dir", "w"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--c-grid", "1,x"],
            "argument --c-grid: expected comma-separated numbers > 0 (e.g. 0.25,1,4,16), got '1,x'",
        ),
        (
            ["--c-grid", "1,0"],
            "argument --c-grid: expected comma-separated numbers > 0 (e.g. 0.25,1,4,16), got '1,0'",
        ),
        (
            ["--feature-types", "cpc,skipthought"],
            "argument --feature-types: unknown 'skipthought'; choose from cpc,random,w2v_mean,bow",
        ),
        (["--tasks", "MR,SST"], "argument --tasks: unknown 'SST'; choose from "),
        (["--folds", "1"], "argument --folds: expected at least 2 folds, got 1"),
        (
            ["--max-items", "-3"],
            "argument --max-items: expected an integer >= 0 (0: all), got '-3'",
        ),
    ],
)
def test_senteval_options_are_checked_before_anything_runs(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _usage_error(capsys, "senteval", SENTEVAL + argv)
    assert expected in err


def test_senteval_grid_and_lists_are_parsed() -> None:
    args = (
        _script("senteval")
        .get_parser()
        .parse_args(
            SENTEVAL + ["--c-grid", "0.5,2", "--feature-types", "bow,cpc", "--max-items", "0"]
        )
    )
    assert args.c_grid == [0.5, 2.0] and args.feature_types == ["bow", "cpc"]
    assert args.max_items == 0
