"""An `--output_dir` training cannot write to is refused at start-up, in one line, before any
model or tokenizer is loaded (`annotated_trl.output.check_output_dir`, called by every script).

Each script is run in-process (`runpy`, as the bad-input tests do) with a model path that does
not exist: had anything tried to load the model or tokenizer first, the error would be about
that path instead. A full disk and a read-only one are real 64 KiB tmpfs mounts (this needs
root, and is skipped, saying so, without it); `/dev/full` shows the errno of a full disk is named
in words everywhere.
"""

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support.bad_input import refusal
from support.processes import OFFLINE_ENV, REPO

from annotated_trl.methods import METHODS
from annotated_trl.output import REASONS, OutputDirError, check_output_dir

# Every script, so a new one is covered as soon as it exists; but a GPU-only one (its row's
# `gpu_only`) refuses on a CPU before it reads a flag (tests/test_<key>_smoke.py).
GPU_ONLY = {m.key for m in METHODS if m.gpu_only}
KEYS = sorted(
    key
    for key in (
        p.name.removesuffix("_training.py") for p in REPO.glob("annotated_examples/*_training.py")
    )
    if key not in GPU_ONLY
)
NOBODY = 65534


def _script_and_recipe(key):
    examples = REPO / "annotated_examples"
    return examples / f"{key}_training.py", examples / "recipes" / f"{key}_tiny.yaml"


@pytest.mark.fault
@pytest.mark.parametrize("key", KEYS)
def test_output_dir_that_is_a_file_is_refused_before_the_model(key, tmp_path, monkeypatch):
    script, recipe = _script_and_recipe(key)
    target = tmp_path / "out"
    target.write_text("not a folder")
    missing = tmp_path / "no-such-model"
    message = refusal(
        monkeypatch,
        script,
        recipe,
        *["--output_dir", target, "--model_name_or_path", missing],
        *["--dataset_name", tmp_path / "no-such-data.jsonl"],
    )
    assert message == f"error: --output_dir {target}: is a file, not a folder; " + (
        "expected a folder you can write to"
    )
    assert target.read_text() == "not a folder"


def test_output_dir_under_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match=r"file is a file, so no folder can be made under it"):
        check_output_dir(tmp_path / "file" / "run")


def test_output_dir_is_not_created_by_the_check(tmp_path):
    check_output_dir(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []  # the probe is gone too


@contextlib.contextmanager
def _as_nobody():
    """Permissions do not apply to root: drop to nobody for the block (a no-op otherwise)."""
    as_root = os.geteuid() == 0
    if as_root:
        os.seteuid(NOBODY)
    try:
        yield
    finally:
        if as_root:
            os.seteuid(0)


def test_output_dir_without_permission_is_refused(tmp_path):
    shared = Path(tempfile.mkdtemp())  # tmp_path's parents are private to root; this one is not
    try:
        shared.chmod(0o755)
        locked = shared / "locked"
        locked.mkdir(mode=0o555)
        with _as_nobody(), pytest.raises(OutputDirError) as info:
            check_output_dir(locked / "run")
        private = tmp_path / "private"
        private.mkdir(mode=0o700)
        with _as_nobody(), pytest.raises(OutputDirError) as hidden:
            check_output_dir(private / "run")
    finally:
        shutil.rmtree(shared)
    assert str(info.value) == (
        f"--output_dir {locked / 'run'}: cannot write there: permission denied (probed its "
        f"nearest existing parent {locked}); expected a folder you can write to"
    )
    if os.geteuid() == 0:  # as nobody, root's private folder cannot even be looked into
        assert "cannot reach it: permission denied" in str(hidden.value)


@contextlib.contextmanager
def _small_disk(folder: Path, options: str):
    """A 64 KiB tmpfs at `folder`. Mounting needs root (CAP_SYS_ADMIN): skip where we lack it."""
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size=64k,{options}", "tmpfs", str(folder)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mounting a small file system needs root; /dev/full below covers ENOSPC")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _fill(folder: Path):
    with pytest.raises(OSError) as info, open(folder / "filler", "wb") as file:
        while True:
            file.write(b"\0" * 4096)
            file.flush()
    assert info.value.errno == errno.ENOSPC


@pytest.mark.fault
def test_output_dir_on_a_full_disk_as_a_user_sees_it(tmp_path):
    """A real full file system: the script exits 1 with one line, before loading anything."""
    with _small_disk(tmp_path / "disk", "rw") as disk:
        _fill(disk)
        out = disk / "run"
        script, recipe = _script_and_recipe("sft")
        result = subprocess.run(
            [sys.executable, script, "--config", recipe, "--output_dir", out],
            cwd=REPO,
            env={**os.environ, **OFFLINE_ENV},
            capture_output=True,
            text=True,
            timeout=300,
        )
        leftovers = sorted(p.name for p in disk.iterdir())
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: --output_dir {out}: cannot write there: no space left on the device (probed "
        f"its nearest existing parent {disk}); expected a folder you can write to"
    ], result.stderr[-2000:]
    assert leftovers == ["filler"]  # the probe cleaned up after itself


def test_output_dir_on_a_read_only_disk(tmp_path):
    with _small_disk(tmp_path / "disk", "ro") as disk, pytest.raises(OutputDirError) as info:
        check_output_dir(disk)
    assert "cannot write there: the file system is read-only" in str(info.value)


def test_full_disk_errno_is_named():
    """Where no file system can be mounted: the errno a full disk gives is named in words."""
    with pytest.raises(OSError) as info, open("/dev/full", "wb", buffering=0) as full:
        full.write(b"\0" * 4096)
    assert info.value.errno == errno.ENOSPC
    assert REASONS[info.value.errno] == "no space left on the device"
