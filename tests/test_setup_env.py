"""local/setup_env.sh: venv outside the clone, keyed by the lock file, a no-op when present."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "local/setup_env.sh"


def test_venv_path_is_keyed_by_lock_and_outside_the_clone(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CPC_VENV"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    out = subprocess.run(
        [str(SETUP), "--print-path"], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    h = hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest()[:12]
    assert out == f"{tmp_path}/cpc-recipes/venv-{h}"
    assert not Path(out).exists()  # --print-path installs nothing
    env["CPC_VENV"] = "/somewhere/else"
    out = subprocess.run(
        [str(SETUP), "--print-path"], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    assert out == "/somewhere/else"


def test_second_run_is_a_noop() -> None:
    # The test command itself ran setup_env.sh, so the environment exists: a second run
    # only checks the stamp and prints the path.
    r = subprocess.run([str(SETUP)], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == os.environ["CPC_VENV"]
    assert "creating" not in r.stderr and "installing" not in r.stderr


def test_unknown_option() -> None:
    r = subprocess.run([str(SETUP), "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown option" in r.stderr
