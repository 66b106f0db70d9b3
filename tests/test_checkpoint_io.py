"""``AtomicCheckpointIO``: a save that dies half-way, or is killed, leaves the previous checkpoint
loadable; an unreadable checkpoint is named in the error."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from minmo_lightning.checkpoint_io import AtomicCheckpointIO, naming_unreadable
from minmo_lightning.checkpoints import CheckpointReadError


def checkpoint(step: int) -> dict:
    return {"global_step": step, "state_dict": {"w": torch.full((256, 256), float(step))}}


def serialised(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "last.ckpt")


def test_save_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    io_, target = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io_.save_checkpoint(checkpoint(1), target)
    io_.save_checkpoint(checkpoint(2), target)
    assert io_.load_checkpoint(target)["global_step"] == 2
    assert leftovers(target.parent) == []
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not private like a mkstemp file


def test_a_save_dying_half_way_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io_, target = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io_.save_checkpoint(checkpoint(1), target)

    data = serialised(checkpoint(2))

    def dies_half_way(state: dict, file) -> None:
        file.write(data[: len(data) // 2])
        file.flush()
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        io_.save_checkpoint(checkpoint(2), target)
    monkeypatch.undo()
    assert io_.load_checkpoint(target)["global_step"] == 1
    assert leftovers(tmp_path) == []


def test_a_killed_save_keeps_the_previous_checkpoint_and_the_next_save_cleans_up(tmp_path: Path) -> None:
    io_, target = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io_.save_checkpoint(checkpoint(1), target)
    killed_mid_write = textwrap.dedent(
        f"""
        import io, os, torch
        from minmo_lightning.checkpoint_io import AtomicCheckpointIO, naming_unreadable

        def killed(state, file):
            buffer = io.BytesIO()
            torch.serialization.save(state, buffer)
            file.write(buffer.getvalue()[:100_000])
            file.flush()
            os.kill(os.getpid(), 9)

        torch.save = killed
        AtomicCheckpointIO().save_checkpoint({{"w": torch.zeros(256, 256)}}, {str(target)!r})
        """
    )
    child = subprocess.run([sys.executable, "-c", killed_mid_write], capture_output=True, text=True)
    assert child.returncode == -9, child.stderr
    (partial,) = leftovers(tmp_path)
    assert partial.startswith(".last.ckpt.") and partial.endswith(".tmp")
    assert io_.load_checkpoint(target)["global_step"] == 1
    io_.save_checkpoint(checkpoint(3), target)
    assert io_.load_checkpoint(target)["global_step"] == 3
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kept_bytes", [0, 1000, -10])
def test_a_truncated_checkpoint_is_named_in_the_error(tmp_path: Path, kept_bytes: int) -> None:
    data = serialised(checkpoint(1))
    (tmp_path / "epoch=0-step=4.ckpt").write_bytes(data)
    broken = tmp_path / "last.ckpt"
    broken.write_bytes(data[:kept_bytes])
    with pytest.raises(CheckpointReadError) as error:
        AtomicCheckpointIO().load_checkpoint(broken)
    message = str(error.value)
    assert str(broken) in message and "truncated or corrupt" in message
    assert "epoch=0-step=4.ckpt" in message  # the earlier checkpoint to resume from
    assert len(message) < 400
    # as around LightningCLI's own read of --ckpt_path FILE
    with pytest.raises(CheckpointReadError, match="truncated or corrupt"), naming_unreadable(broken):
        torch.load(broken, weights_only=True, map_location="cpu")


def test_other_load_errors_pass_through(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "missing.ckpt")
