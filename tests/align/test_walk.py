"""The tree listing is one streaming walk (issue 17 item 3): the same rows, hidden counts,
output names and tree hash as the two-walk code it replaced (the oracle below), and a
no-op align re-run lists each folder once."""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest

from facecl.align.io import _finish, list_tree, printable, safe_component
from facecl.align.walk import TreeWalk
from facecl.artifacts import tree_sha256
from tests.faults.hostile import build


def _oracle_scan(root: Path):
    """The listing before the streaming walk: every folder listed, rows sorted at the end."""
    rows, notes = [], Counter()
    seen = {os.path.realpath(root)}
    stack = [(Path(root), "")]
    while stack:
        folder, rel = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: (e.is_symlink(), e.name))
        except OSError as err:
            rows.append(
                (rel or ".", folder, "read_error", f"cannot list the folder: {err.strerror}")
            )
            continue
        for ent in entries:
            r = f"{rel}/{ent.name}" if rel else ent.name
            if ent.name.startswith("."):
                p = Path(ent.path)
                if not p.is_dir() or p.is_symlink():
                    notes["ignored_hidden"] += 1
                else:
                    errors = []
                    for _, _, files in os.walk(p, onerror=errors.append):
                        notes["ignored_hidden"] += len(files)
                    notes["ignored_hidden"] += len(errors)
            elif ent.is_dir():
                real = os.path.realpath(ent.path)
                if real in seen:
                    rows.append(
                        (r, Path(ent.path), "link_loop", f"a folder already listed: {real}")
                    )
                else:
                    seen.add(real)
                    stack.append((Path(ent.path), r))
            else:
                rows.append((r, Path(ent.path), "", ""))
    rows.sort(key=lambda row: row[0])
    return rows, notes


def _oracle_items(root: Path):
    rows, _ = _oracle_scan(root)
    out = []
    for source, path, problem, detail in rows:
        parts = source.split("/")
        ident = parts[0] if len(parts) > 1 else ""
        if problem:
            out.append((printable(source), path, printable(ident), "", problem, detail))
        elif len(parts) == 1:
            out.append((printable(source), path, "", "", "no_identity", "x"))
        elif not all(safe_component(p) for p in parts):
            out.append((printable(source), path, printable(ident), "", "unsafe_name", "x"))
        else:
            stem = "/".join(parts[1:-1] + [Path(parts[-1]).stem])
            out.append((source, path, ident, stem, "", ""))
    return [(i.index, i.source, i.path, i.identity, i.base, i.problem) for i in _finish(out)]


def _same_as_oracle(root: Path) -> None:
    walk = TreeWalk(root)
    rows = list(walk)
    old_rows, old_notes = _oracle_scan(root)
    assert [r[:3] for r in rows] == [r[:3] for r in old_rows]
    assert dict(walk.notes) == dict(old_notes)
    assert walk.sha256 == tree_sha256(root)
    items, _ = list_tree(root)
    got = [(i.index, i.source, i.path, i.identity, i.base, i.problem) for i in items]
    assert got == _oracle_items(root)
    assert [i.source for i in items[2:5]] == [g[1] for g in got[2:5]]  # slices


def test_hostile_tree_lists_as_before(tmp_path):
    _same_as_oracle(build(tmp_path).root)


NAMES = ["a", "a.jpg", "a.png", "A.JPG", "a.jpg.png", "a-b", "a b", "ab", "x.y", ".h", "é",
         "日本", "a~", "Zed", "zed"]  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_random_trees_with_colliding_names_list_as_before(tmp_path, seed):
    """Names that collide once case-folded or with their suffix dropped, names that sort
    differently as folders and files, hidden ones, nested folders."""
    rng = random.Random(seed)
    root = tmp_path / "t"
    root.mkdir()
    for _ in range(80):
        p = root.joinpath(*(rng.choice(NAMES) for _ in range(rng.randint(1, 3))))
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            if not p.exists():
                p.write_bytes(b"x" * rng.randint(0, 3))
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            pass
    _same_as_oracle(root)


def test_a_no_op_align_lists_each_folder_once(tmp_path, monkeypatch):
    """The up-to-date check of a re-run walks the tree once (it walked it twice: the
    listing, then the tree hash)."""
    from facecl.align.config import AlignConfig
    from facecl.align.stage import run_align
    from tests.faults.hostile import photo

    src = tmp_path / "src"
    for ident in ("Aaron_Eckhart", "Ann_Veneman"):
        (src / ident).mkdir(parents=True)
        (src / ident / "a.jpg").write_bytes(photo(ident).read_bytes())
    cfg = AlignConfig(on_miss="center")
    run_align(cfg, src, tmp_path / "out", detector=_NoFaces())
    listed: Counter[str] = Counter()
    real_scandir = os.scandir

    def counting(path="."):
        listed[os.path.realpath(path)] += 1
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counting)
    s = run_align(cfg, src, tmp_path / "out", detector=_NoFaces())
    assert s.noop
    assert listed[str(src.resolve())] == 1 and listed[str((src / "Ann_Veneman").resolve())] == 1


class _NoFaces:
    """A detector that finds nothing (every image takes the centre crop)."""

    device = "cpu"

    def detect(self, images, *a, **k):
        return [None] * len(images)
