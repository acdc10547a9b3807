"""`make setup`'s choice of torch build (TORCH=auto|cpu|cuda), read from `make -n` (which runs no recipe)
in a copy of the Makefile, with a fake `nvidia-smi` first on PATH: no GPU, network or install needed."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
# what the real nvidia-smi -L prints on a machine with a GPU, and on one without the driver
NVIDIA_SMI = {True: "#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0f1e2d3c)'\n",
              False: "#!/bin/sh\necho \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
                     "driver.\"\nexit 9\n"}


@pytest.fixture
def sandbox(tmp_path):
    """A folder holding copies of the Makefile and its requirements files, and no .venv."""
    for name in ("Makefile", "requirements.txt", "requirements-weights.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def make_n(folder: Path, gpu: bool, *args) -> subprocess.CompletedProcess:
    """``make -n setup ARGS`` in ``folder`` on a machine with (``gpu``) or without an NVIDIA GPU."""
    fake = folder / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "nvidia-smi").write_text(NVIDIA_SMI[gpu])
    (fake / "nvidia-smi").chmod(0o755)
    # not a sub-make of `make test` (CI runs the tests under make): no inherited flags or directory lines
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env["PATH"] = f"{fake}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["make", "--no-print-directory", "-n", "setup", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=60)


def install_line(out: str) -> str:
    (line,) = [line for line in out.splitlines() if "pip install" in line and "-r requirements.txt" in line]
    return line


@pytest.mark.parametrize("gpu, args, build, why", [
    (True, (), "cuda", "nvidia-smi found a GPU"),
    (False, (), "cpu", "no NVIDIA GPU found"),
    (True, ("TORCH=cpu",), "cpu", "TORCH=cpu"),
    (False, ("TORCH=cuda",), "cuda", "TORCH=cuda"),
])
def test_torch_build_follows_the_machine_unless_TORCH_says(sandbox, gpu, args, build, why):
    done = make_n(sandbox, gpu, *args)
    assert done.returncode == 0, done.stderr
    assert f'echo "make: torch: {build.upper()} build ({why})"' in done.stdout.splitlines()
    assert f"touch .venv/.torch-{build}" in done.stdout
    install = install_line(done.stdout)
    # the pretrained weights: their pinned wheel alone, never its TensorFlow and old-numpy dependencies
    assert any(line.endswith("pip install -q --no-deps --require-hashes -r requirements-weights.txt")
               for line in done.stdout.splitlines())
    if build == "cuda":
        assert "--extra-index-url https://download.pytorch.org/whl/cu" in install
    else:
        assert "--find-links /opt/wheels" in install or "--extra-index-url https://download.pytorch.org/whl/cpu" in install


def test_a_venv_of_the_other_build_is_reinstalled_and_one_of_this_build_is_kept(sandbox):
    venv = sandbox / ".venv"
    venv.mkdir()
    # a CPU setup, done in this order: the requirements files, the build's marker, the install's
    for when, path in enumerate((sandbox / "requirements.txt", sandbox / "requirements-weights.txt",
                                 venv / ".torch-cpu", venv / ".installed")):
        path.touch()
        os.utime(path, (1e9 + when, 1e9 + when))
    assert "Nothing to be done" in make_n(sandbox, True, "TORCH=cpu").stdout
    done = make_n(sandbox, True)
    assert "pip uninstall -qq -y torch" in done.stdout and "whl/cu" in install_line(done.stdout)


@pytest.mark.parametrize("value", ["gpu", "CPU", ""])
def test_a_wrong_TORCH_is_one_line(sandbox, value):
    done = make_n(sandbox, False, f"TORCH={value}")
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 2 and f"TORCH={value}: choose auto, cpu or cuda" in line and not done.stdout
