"""One writer per output (issue 13 item 11): a second process writing the same -o exits 1
in one line naming the first one's PID; a lock left by a killed process is taken over; no
lock file outlives a finished or failed command."""

from __future__ import annotations

import time

from tests.faults.conftest import PACK_ARGS, TRAIN_ARGS, ok
from tests.faults.helpers import facecl, one_line_error, start


def _wait_for(path, proc, timeout=60):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - t0 < timeout, "no lock file appeared"
        time.sleep(0.02)


def test_second_writer_is_refused_then_a_stale_lock_is_taken_over(pipeline, tmp_path):
    """A16: two trains into one -o; A17: the first SIGKILLed leaves its lock, taken over."""
    run = tmp_path / "R"
    lock = tmp_path / "R.lock"
    # the first writer holds the lock while it sleeps 30 s before training
    first = start(
        "train", pipeline.pack, "-o", run, *TRAIN_ARGS, slow=("facecl.train.stage:fit", 30)
    )
    try:
        _wait_for(lock, first)
        assert lock.read_text().strip() == str(first.pid)
        second = facecl("train", pipeline.pack, "-o", run, *TRAIN_ARGS)
        one_line_error(second, 1, f"already being written by PID {first.pid}", str(lock))
        assert not run.exists()
    finally:
        first.kill()
        first.wait(timeout=30)
    assert lock.is_file()  # a killed process cannot clean up: the lock file stays ...
    r = ok(facecl("train", pipeline.pack, "-o", run, *TRAIN_ARGS))  # ... and is taken over
    assert "trained" in r.stderr and (run / "manifest.json").is_file()
    assert not lock.exists() and not (tmp_path / "R.partial").exists()


def test_no_lock_left_after_success_failure_or_no_op(pipeline, tmp_path):
    """A18: the lock file is removed after a commit, an up-to-date no-op and an error."""
    out = tmp_path / "P"
    ok(facecl("pack", pipeline.align, "-o", out, *PACK_ARGS))
    assert not (tmp_path / "P.lock").exists()
    ok(facecl("pack", pipeline.align, "-o", out, *PACK_ARGS))  # up to date
    assert not (tmp_path / "P.lock").exists()
    names = tmp_path / "everyone.txt"
    names.write_text("\n".join(p.name for p in pipeline.src.iterdir()) + "\n")
    r = facecl("pack", pipeline.align, "-o", tmp_path / "P2", "--exclude", names)
    one_line_error(r, 1, "nothing left to pack")
    assert not (tmp_path / "P2.lock").exists() and not (tmp_path / "P2.partial").exists()


def test_lock_of_an_output_whose_parent_does_not_exist_yet(pipeline, tmp_path):
    """A55: -o new/dirs/P: the lock beside it needs its parent; the stage makes it."""
    out = tmp_path / "new" / "dirs" / "P"
    ok(facecl("pack", pipeline.align, "-o", out, *PACK_ARGS))
    assert (out / "manifest.json").is_file() and not (out.parent / "P.lock").exists()
