"""febm.files: atomic writes leave the old file or the new one, never a torn one or a stray temporary."""

from pathlib import Path

import pytest

from febm.files import atomic_path, write_atomic


def test_write_atomic_writes_text_and_bytes_and_replaces(tmp_path):
    path = tmp_path / "out.json"
    assert write_atomic(path, "héllo\n") == path
    assert path.read_text(encoding="utf-8") == "héllo\n"
    write_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half of the n")  # a writer that dies half-way
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]


def test_a_failed_first_write_creates_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "new.txt", 42)  # neither str nor bytes: fails while writing
    assert list(tmp_path.iterdir()) == []




def test_png_and_training_state_writers_leave_the_old_file_when_they_fail(tmp_path, monkeypatch):
    import torch
    from PIL import Image

    from febm.imageio import save_image
    from training import checkpoint

    def png_dies_half_way(image, f, format):
        f.write(b"torn")
        raise OSError("killed")

    def state_dies_half_way(tensors, filename, metadata):
        Path(filename).write_bytes(b"torn")
        raise OSError("killed")

    png, state = tmp_path / "a.png", tmp_path / "s.safetensors"
    png.write_bytes(b"old png")
    state.write_bytes(b"old state")
    monkeypatch.setattr(Image.Image, "save", png_dies_half_way)
    monkeypatch.setattr(checkpoint, "save_file", state_dies_half_way)
    with pytest.raises(OSError, match="killed"):
        save_image(torch.zeros(1, 4, 4), png)
    with pytest.raises(OSError, match="killed"):
        checkpoint.save_state(state, {"x": torch.ones(2)})
    assert png.read_bytes() == b"old png" and state.read_bytes() == b"old state"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "s.safetensors"]
