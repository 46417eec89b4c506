"""Atomic writes never lose a file kgpipe did not write; outputs are checked before any work."""

from pathlib import Path

import pytest

from kg.storage import OutputError, atomic_dir, atomic_write, check_output


def test_atomic_dir_replaces_its_own_folder_whole_and_merges_into_a_users(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "old.txt").write_text("stale")
    with atomic_dir(out) as tmp:  # only names it writes: swapped whole, the stale file goes
        (tmp / "a.txt").write_text("2")
        (tmp / "old.txt").write_text("new")
    assert (out / "a.txt").read_text() == "2"
    (out / "user.txt").write_text("mine")
    (out / "sub").mkdir()
    with atomic_dir(out) as tmp:  # a file it did not write: merged, never deleted
        (tmp / "a.txt").write_text("3")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x").write_text("x")
    assert (out / "a.txt").read_text() == "3" and (out / "user.txt").read_text() == "mine"
    assert (out / "sub" / "x").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


def test_a_failed_write_leaves_the_old_folder_and_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("disk full")
    assert (out / "a.txt").read_text() == "old"
    with pytest.raises(RuntimeError), atomic_write(out / "a.txt") as f:
        f.write("half")
        raise RuntimeError("disk full")
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]


def test_a_file_is_never_replaced_by_a_folder_or_the_reverse(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("mine")
    with pytest.raises(OutputError, match="is a file"), atomic_dir(tmp_path / "f.txt"):
        pass
    with pytest.raises(OutputError, match="is a folder"), atomic_write(tmp_path):
        pass
    assert (tmp_path / "f.txt").read_text() == "mine"


def test_check_output_refuses_what_would_lose_a_file(tmp_path: Path) -> None:
    data = tmp_path / "kg"
    data.mkdir()
    (data / "train.txt").write_text("a\tr\tb\n")
    for out, word in [(data, "is the input"), (data / "x", "lies inside"), (tmp_path, "contains")]:
        with pytest.raises(OutputError, match=word):
            check_output(out, "kgpipe-kg", (data,))
    with pytest.raises(OutputError, match="is a file"):
        check_output(data / "train.txt", "kgpipe-kg")
    with pytest.raises(OutputError, match="--force"):
        check_output(data, "kgpipe-kg")
    check_output(data, "kgpipe-kg", force=True)  # --force: allowed, kgpipe's files go in beside
    check_output(tmp_path / "new", "kgpipe-kg")
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", "kgpipe-kg")
    with pytest.raises(OutputError, match="is the input"):
        check_output(data / "train.txt", None, (data / "train.txt",))
