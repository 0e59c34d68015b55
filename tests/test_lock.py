"""The lock files (locks/cpu.txt, locks/gpu.txt) and how `make` installs them.

Each lock is the resolution of one install (pyproject.toml with the extras cpu or gpu, book and
test): it must choose exactly one TensorFlow distribution (tensorflow-cpu and tensorflow install
the same ``tensorflow/`` package over each other), keep every pin inside pyproject.toml's
ranges, and be what the environment under test was built from. Nothing here installs anything:
the Makefile checks run ``make -n`` / ``make -q``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dlga import settings

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {device: ROOT / "locks" / f"{device}.txt" for device in ("cpu", "gpu")}
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)")
# Every distribution that installs the `tensorflow` package: an environment holds one of them.
TENSORFLOWS = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos",
               "tensorflow-aarch64", "tf-nightly", "tf-nightly-cpu", "tf-nightly-gpu", "intel-tensorflow"}
# The CUDA libraries TensorFlow loads on an NVIDIA GPU (its and-cuda extra).
CUDA = {"nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12", "nvidia-cudnn-cu12", "nvidia-cufft-cu12",
        "nvidia-curand-cu12", "nvidia-cusolver-cu12", "nvidia-cusparse-cu12", "nvidia-nccl-cu12"}


def read_lock(path: Path) -> dict[str, str]:
    """``{canonical name: version}``; fails on any line that is neither a comment nor ``name==version``."""
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.fullmatch(line.strip())
        assert match, f"{path.name}:{number}: not name==version: {line!r}"
        name = canonicalize_name(match[1])
        assert name not in pins, f"{path.name}:{number}: {name} pinned twice"
        pins[name] = match[2]
    return pins


def requirements(device: str) -> list[Requirement]:
    """What pyproject.toml asks of the DEVICE environment: the dependencies and the extras device, book, test."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in (*project["dependencies"], *extras[device], *extras["book"], *extras["test"])]


@pytest.mark.parametrize("device, tensorflow", [("cpu", "tensorflow-cpu"), ("gpu", "tensorflow")])
def test_each_lock_installs_exactly_one_tensorflow(device, tensorflow):
    pins = read_lock(LOCKS[device])
    assert {name for name in pins if name in TENSORFLOWS} == {tensorflow}


def test_only_the_gpu_lock_has_cuda_and_otherwise_the_locks_agree():
    cpu, gpu = read_lock(LOCKS["cpu"]), read_lock(LOCKS["gpu"])
    assert CUDA <= set(gpu)
    assert not any(name.startswith("nvidia-") for name in cpu)
    # The same versions of everything else (make lock holds the gpu lock to the cpu lock's
    # versions): a GPU build differs from a CPU build in TensorFlow's build and CUDA alone.
    assert cpu["tensorflow-cpu"] == gpu["tensorflow"]
    assert {n: v for n, v in cpu.items() if n != "tensorflow-cpu"} == {
        n: v for n, v in gpu.items() if n != "tensorflow" and not n.startswith("nvidia-")}


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_locked_versions_satisfy_pyproject_ranges(device):
    pins = read_lock(LOCKS[device])
    outside = [f"{r.name}=={pins.get(canonicalize_name(r.name))} (pyproject: {r.specifier})"
               for r in requirements(device)
               if canonicalize_name(r.name) not in pins or not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)]
    assert outside == []
    assert not any(canonicalize_name(r.name) == "dlga-book" for r in requirements(device))  # the project is not in its lock


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_lock_header_says_what_it_was_resolved_for(device):
    header = [line for line in LOCKS[device].read_text().splitlines() if line.startswith("# ")][:4]
    text = " ".join(header)
    assert f"extras {device},book,test" in text and "for Python 3.11 on Linux x86_64" in text and "make lock" in text
    requires_python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f"allows Python {requires_python}" in text


def test_the_environment_under_test_has_the_locked_numerics_libraries():
    """The libraries that decide a run's numbers (and so its id) are the lock's: `make` built this
    environment from the lock named by $DLGA_LOCK (locks/cpu.txt by default)."""
    pins = read_lock(settings.LOCK_FILE)
    tensorflow = "tensorflow-cpu" if "tensorflow-cpu" in pins else "tensorflow"
    installed = {name: importlib.metadata.version(name) for name in (tensorflow, "keras", "numpy")}
    assert installed == {name: pins[name] for name in installed}, (
        f"this environment is not {settings.LOCK_FILE.name}'s: run `make` (it syncs .venv to the lock)")


def test_dlga_lock_names_the_lock_in_use(tmp_path):
    lock = tmp_path / "gpu.txt"
    probe = "from dlga import settings; print(settings.LOCK_FILE); print(settings.lock_hash())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "DLGA_LOCK": str(lock), "PYTHONPATH": str(ROOT)}).stdout.splitlines()
    assert out == [str(lock), f"no lock ({lock} not found)"]


def test_lock_hash_is_the_files_sha256(tmp_path):
    lock = tmp_path / "cpu.txt"
    lock.write_text("numpy==2.4.6\n")
    digest = hashlib.sha256(b"numpy==2.4.6\n").hexdigest()
    assert settings.lock_hash(lock) == f"cpu.txt sha256 {digest[:12]}"


def _make(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    return subprocess.run(["make", "--no-print-directory", "-C", str(cwd), *args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_make_installs_the_devices_lock_then_the_project_without_dependencies(device):
    out = _make("-n", "-B", "venv", f"DEVICE={device}").stdout
    assert f"uv pip sync --quiet --python .venv/bin/python locks/{device}.txt" in out
    assert f'--no-deps -e ".[{device},book,test]"' in out
    assert out.index("pip sync") < out.index("--no-deps")
    assert '"uv==' in out  # uv itself comes from PyPI at a pinned version


def _compiles(*args: str) -> list[str]:
    out = _make("-n", "-B", "lock", *args).stdout
    return [line for line in out.splitlines() if line.startswith(".venv/bin/uv pip compile ")]


def test_make_lock_resolves_both_locks_for_python_3_11_on_linux():
    compiles = _compiles()
    assert len(compiles) == 2
    assert all("--python-version 3.11 --python-platform x86_64-manylinux_2_28" in c for c in compiles)
    assert "--extra cpu --extra book --extra test" in compiles[0] and compiles[0].endswith("-o locks/cpu.txt")
    assert "--extra gpu --extra book --extra test -c locks/cpu.txt" in compiles[1] and compiles[1].endswith("-o locks/gpu.txt")
    # Pins that still fit are kept, unless UPGRADE=1 asks for the newest versions.
    assert not any("--upgrade" in c for c in compiles) and all("--upgrade" in c for c in _compiles("UPGRADE=1"))


def test_the_stamp_is_stale_when_the_lock_or_the_device_changes(tmp_path):
    """`make -q venv`: 0 when .venv is up to date, 1 when make would install it again."""
    shutil.copy(ROOT / "Makefile", tmp_path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "locks", tmp_path / "locks")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    uv, stamp = tmp_path / ".venv" / "bin" / "uv", tmp_path / ".venv" / ".installed-cpu"
    for path in (uv, stamp):
        path.touch()
    t = 1_000_000_000  # every source at t, uv and the cpu stamp after it
    for path in (tmp_path / "Makefile", tmp_path / "pyproject.toml", *(tmp_path / "locks").iterdir()):
        os.utime(path, (t, t))
    for path in (uv, stamp):
        os.utime(path, (t + 10, t + 10))
    def up_to_date(device: str = "cpu") -> bool:
        return _make("-q", f".venv/.installed-{device}", f"DEVICE={device}", cwd=tmp_path).returncode == 0

    assert up_to_date()
    assert not up_to_date("gpu")  # another device: its stamp is missing
    os.utime(tmp_path / "locks" / "gpu.txt", (t + 20, t + 20))
    assert up_to_date()  # the other device's lock changed
    os.utime(tmp_path / "locks" / "cpu.txt", (t + 20, t + 20))
    assert not up_to_date()  # its own lock changed
    os.utime(tmp_path / "locks" / "cpu.txt", (t, t))
    os.utime(tmp_path / "pyproject.toml", (t + 20, t + 20))
    assert not up_to_date()  # a range changed
