"""All-or-nothing output files (image_core.files)."""

import os

import pytest

from image_core.files import final_path, replacing


def test_replacing_writes_all_files_or_none(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.png"
    b.write_text("old")
    with pytest.raises(RuntimeError):
        with replacing(a, b) as (ta, tb):
            assert ta.parent == tmp_path and ta.suffix == ".wav" and ta.name.startswith(".")
            ta.write_text("new a")
            raise RuntimeError("the second write failed")
    assert sorted(os.listdir(tmp_path)) == ["b.png"] and b.read_text() == "old"
    with replacing(a, b) as (ta, tb):
        ta.write_text("new a")
        tb.write_text("new b")
    assert sorted(os.listdir(tmp_path)) == ["a.wav", "b.png"] and b.read_text() == "new b"


def test_final_path_names_the_requested_file(tmp_path):
    target = tmp_path / "song.edit.flac"
    with replacing(target) as (temporary,):
        assert final_path(temporary) == target
        temporary.write_bytes(b"")
    assert final_path(target) == target
    assert final_path(tmp_path / ".hidden.wav") == tmp_path / ".hidden.wav"
