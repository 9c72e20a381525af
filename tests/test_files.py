"""src.files.atomic_write: all or nothing, with the mode a user expects."""

import os
import stat

import pytest

from src.files import atomic_write


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writes_text_and_binary_and_creates_the_folder(tmp_path):
    text = atomic_write(tmp_path / "a" / "b.csv", lambda fh: fh.write("x,y\r\n1,2\r\n"))
    assert text.read_bytes() == b"x,y\r\n1,2\r\n"  # newline="": no translation
    blob = atomic_write(tmp_path / "c.bin", lambda fh: fh.write(b"\x00\xff"), binary=True)
    assert blob.read_bytes() == b"\x00\xff"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_mode_is_what_open_would_give_under_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = atomic_write(tmp_path / "out.md", lambda fh: fh.write("hi"))
        with open(tmp_path / "plain.md", "w") as fh:
            fh.write("hi")
    finally:
        os.umask(old)
    assert _mode(path) == _mode(tmp_path / "plain.md") == 0o666 & ~umask


def test_a_failed_write_leaves_no_temp_file_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")

    def fail(fh):
        fh.write("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_an_interrupt_mid_write_also_cleans_up(tmp_path):
    def interrupt(fh):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.png", interrupt, binary=True)
    assert list(tmp_path.iterdir()) == []
