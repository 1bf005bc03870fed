"""The one write-then-rename helper: a file or folder appears whole or not at all."""

from __future__ import annotations

import pytest

from kinemate.io.atomic import atomic_folder, atomic_path, write_json_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    final = tmp_path / "out" / "clip.mp4"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp.suffix == ".mp4"  # tools see the suffix
        tmp.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer died")
    assert final.read_bytes() == b"old"
    assert sorted(p.name for p in final.parent.iterdir()) == ["clip.mp4"]


def test_mode_applies_to_the_final_file(tmp_path):
    with atomic_path(tmp_path / "key", mode=0o600) as tmp:
        tmp.write_text("secret")
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600


def test_a_folder_is_replaced_whole(tmp_path):
    final = tmp_path / "model"
    with atomic_folder(final) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_folder(final) as tmp:
            (tmp / "b.txt").write_text("2")
            raise RuntimeError("died half way")
    assert sorted(p.name for p in final.iterdir()) == ["a.txt"]
    with atomic_folder(final) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in final.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing left beside it


def test_json_compact_refuses_nan(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"x": [1, 2]}, indent=None)
    assert (tmp_path / "a.json").read_text() == '{"x":[1,2]}'
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "b.json", {"x": float("nan")}, allow_nan=False)
    assert not (tmp_path / "b.json").exists()
