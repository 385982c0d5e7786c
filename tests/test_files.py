"""All-or-nothing output files (image_core.files)."""

import os

import pytest

from image_core.errors import InputError
from image_core.files import DEFAULT_NAME_MAX, check_name_length, final_path, name_limit, replacing


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


def test_temporaries_have_a_fixed_length_whatever_the_name(tmp_path):
    """A name at the folder's limit is written: its temporary is short (the old ones were 14 bytes longer)."""
    limit = name_limit(tmp_path)
    longest = tmp_path / ("n" * (limit - 5) + ".flac")
    short = tmp_path / "s.flac"
    with replacing(longest, short) as (t_long, t_short):
        assert len(t_long.name) == len(t_short.name) < 40 and t_long.suffix == ".flac"
        t_long.write_text("long")
        t_short.write_text("short")
    assert longest.read_text() == "long" and sorted(os.listdir(tmp_path)) == sorted([longest.name, "s.flac"])


def test_a_name_over_the_limit_is_refused_before_writing(tmp_path):
    limit = name_limit(tmp_path)
    ok, too_long = tmp_path / "ok.wav", tmp_path / ("é" * (limit // 2) + ".wav")  # bytes, not characters
    with pytest.raises(InputError, match=f"bytes long, more than the {limit}"):
        with replacing(ok, too_long):
            raise AssertionError("the block must not run")
    with pytest.raises(InputError):
        check_name_length(too_long)
    assert os.listdir(tmp_path) == []


def test_name_limit_falls_back_to_255(tmp_path, monkeypatch):
    assert name_limit(tmp_path / "missing") == DEFAULT_NAME_MAX == 255

    def unsupported(path, name):
        raise ValueError("unrecognized configuration name")

    monkeypatch.setattr(os, "pathconf", unsupported)
    assert name_limit(tmp_path) == 255


def test_nested_replacing_writes_the_outer_temporary_directly(tmp_path):
    target = tmp_path / "edit.wav"
    with replacing(target) as (outer,):
        with replacing(outer) as (inner,):
            assert inner == outer and final_path(inner) == target
            inner.write_text("once")
        assert os.listdir(tmp_path) == [outer.name]  # no second temporary, nothing replaced yet
    assert os.listdir(tmp_path) == ["edit.wav"] and target.read_text() == "once"
    assert final_path(outer) == outer  # the block is over: the name stands for itself again
