"""Fresh virtual environments for tests that prove an install works from nothing.

``Venv.create(path)`` makes a venv with the interpreter running the tests and
pip's configuration of this machine (its index and wheel cache); ``install``
is ``pip install`` into it; ``run`` runs one of its commands and returns the
completed process (its output kept for the assertion message).
"""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import attrs

#: the repository holding orion-kernel's pyproject.toml
REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    """The environment for commands in the venv: this one, minus what points into another venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@attrs.frozen
class Venv:
    path: Path

    @classmethod
    def create(cls, path: Path) -> Venv:
        venv.EnvBuilder(with_pip=True, clear=True).create(path)
        return cls(path)

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name

    @property
    def python(self) -> Path:
        return self.bin("python")

    def run(
        self, *args: str | Path, cwd: Path | None = None, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run ``args`` (the first one looked up in the venv's bin/ when it is there)."""
        argv = [str(a) for a in args]
        if self.bin(argv[0]).exists():
            argv[0] = str(self.bin(argv[0]))
        env = _env()
        env["PATH"] = f"{self.path / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            )
        return done

    def install(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return self.run(self.python, "-m", "pip", "install", "--quiet", *args)
