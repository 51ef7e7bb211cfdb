"""The one mapping of OS-level failures to one-line errors (facecl/oserrors.py) and the
up-front output checks (facecl/outpath.py), in process: every errno kind, h5py's and
torch's texts, and the free-space check."""

from __future__ import annotations

import errno
import os

import pytest

from facecl.errors import StorageError, UsageError
from facecl.oserrors import is_storage_failure, storage_error
from facecl.outpath import check_free_space, check_not_input
from tests.faults.conftest import TRAIN_ARGS
from tests.faults.helpers import facecl, one_line_error


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "no space left"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
        (errno.ENAMETOOLONG, "file name too long"),
        (errno.ENOTDIR, "not a directory"),
        (errno.EBUSY, "busy"),
        (errno.EXDEV, "across file systems"),
        (errno.EDQUOT, "quota"),
    ],
)
def test_each_errno_is_one_line_with_its_path(code, words):
    """A56-A63: each errno: what happened, its name, the path, a fix."""
    e = storage_error(OSError(code, os.strerror(code), "/data/out.partial/x.png"))
    assert isinstance(e, StorageError) and e.exit_code == 1
    line = e.one_line()
    assert words in line and errno.errorcode[code] in line and "/data/out.partial/x.png" in line
    assert "\n" not in line and e.hint


def test_h5py_error_text_gives_errno_and_name():
    """A64: h5py raises OSError without errno; the text holds 'errno = 28' and the name."""
    text = (
        "Unable to synchronously create file (unable to open file: name = '/t/P.partial/x.h5',"
        " errno = 28, error message = 'No space left on device', flags = 13)"
    )
    line = storage_error(OSError(text)).one_line()
    assert "no space left" in line and "ENOSPC" in line and "/t/P.partial/x.h5" in line


def test_torch_stream_error_is_a_storage_failure():
    """A65: torch.save's iostream RuntimeError counts; other RuntimeErrors do not."""
    e = RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 40")
    assert is_storage_failure(e) and "disk is probably full" in storage_error(e).one_line()
    assert not is_storage_failure(RuntimeError("CUDA out of memory"))


def test_unknown_errno_keeps_its_text():
    """A66: an errno without a canned text keeps the OS's text, still one line."""
    line = storage_error(OSError(errno.ELOOP, "Too many levels of symbolic links", "/a")).one_line()
    assert "Too many levels" in line and "ELOOP" in line and "/a" in line


def test_free_space_check(tmp_path):
    """A67: more than the free space is refused; a small need passes."""
    with pytest.raises(StorageError, match="not enough free space"):
        check_free_space(tmp_path / "P", 1 << 60, "a huge pack")
    check_free_space(tmp_path / "P", 1024, "a tiny pack")


def test_not_input_checks(tmp_path):
    """A68: is / contains / inside an input are refused, a sibling is fine."""
    a = (tmp_path / "A").resolve()
    for out, word in ((a, "is an input"), (tmp_path, "contains"), (a / "x", "is inside")):
        with pytest.raises(UsageError, match=word):
            check_not_input(out.resolve(), [a])
    check_not_input((tmp_path / "B").resolve(), [a])


def test_export_never_writes_into_the_run_or_over_its_checkpoint(pipeline):
    """A69: `export R -o R/model.pt --force` would replace the run's model."""
    r = facecl("export", pipeline.run, "-o", pipeline.run / "model.pt", "--force")
    one_line_error(r, 2, "is inside")
    assert (pipeline.run / "model.pt").is_file()


def test_train_from_a_partial_pack_is_refused(pipeline, tmp_path):
    """A70: `train P.partial` (a killed pack) is one line, not a half-read pack."""
    import shutil

    fake = tmp_path / "P.partial"
    shutil.copytree(pipeline.pack, fake)
    r = facecl("train", fake, "-o", tmp_path / "R", *TRAIN_ARGS)
    one_line_error(r, 1, "unfinished output")
