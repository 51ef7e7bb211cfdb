"""faces.csv, the align artifact's table: its writer and reader agree, and a damaged file is
refused with the line and column, as one message."""

from __future__ import annotations

import csv
import io

import pytest
from typer.testing import CliRunner

from facecl.align.artifact import (
    COLUMNS,
    FACES_CSV,
    FaceRow,
    faces_text,
    read_faces,
    read_faces_file,
    write_faces,
)
from facecl.artifacts import StageOutput
from facecl.cli import app
from facecl.errors import ArtifactError, InputError

ROWS = [
    FaceRow(
        "Alice/a.jpg",
        "Alice",
        "aligned/Alice/a.png",
        "ok",
        face_index=0,
        box=(10.25, 20.5, 110.0, 130.75),
        score=0.99871,
        landmarks=((30.125, 51.5), (65.5, 51.25), (48.0, 71.75), (33.5, 92.375), (62.75, 92.2)),
        n_faces=2,
        width=250,
        height=250,
        index=0,
        notes=("reduced", "exif_rotated"),
    ),
    FaceRow(
        'Bob, Jr./b "quoted".png',
        "Bob, Jr.",
        "aligned/Bob, Jr./b.png",
        "center",
        "no_face",
        landmarks=((-1.5, 0.0), (2.0, 3.0), (4.0, 5.0), (6.0, 7.0), (8.0, 9.0)),
        index=1,
        detail="no face detected; fixed centre crop",
    ),
    FaceRow("Zoë/c.jpg", "Zoë", "", "skipped", "empty_file", index=2, detail="zero-byte\nfile"),
]


def _artifact(tmp_path, rows):
    so = StageOutput(tmp_path / "aligned", "align", {"size": "112x96"}, [])
    write_faces(so.begin() / FACES_CSV, rows)
    so.commit({"processed": len(rows)})
    return so.path


def test_write_then_read_gives_the_rows_back(tmp_path):
    path = tmp_path / FACES_CSV
    write_faces(path, ROWS)
    assert read_faces_file(path) == ROWS
    with open(path, newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == list(COLUMNS)
    assert faces_text(read_faces_file(path)) == path.read_text(encoding="utf-8")  # same bytes
    assert read_faces(_artifact(tmp_path, ROWS)) == ROWS
    rec = ROWS[0].record()
    assert (rec["x1"], rec["score"], rec["lm_x1"], rec["notes"]) == (
        "10.25",
        "0.99871",
        "30.125",
        "reduced exif_rotated",
    )
    assert ROWS[2].record()["width"] == "" and ROWS[2].record()["lm_y5"] == ""


def test_read_faces_needs_a_finished_align_artifact(tmp_path):
    write_faces(tmp_path / FACES_CSV, ROWS)
    with pytest.raises(ArtifactError, match="no facecl artifact"):
        read_faces(tmp_path)


def _damage(rows: list[FaceRow], column: str, value: str) -> str:
    """The faces.csv text of ``rows`` with ``column`` of the second row (line 3) = ``value``."""
    records = [r.record() for r in rows]
    records[1][column] = value
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(records)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("face_index", "first", r":3: column face_index: 'first' is not an integer"),
        ("index", "", r":3: column index: '' is not an integer"),
        ("status", "maybe", r":3: column status: 'maybe' is not one of ok, landmarks"),
        ("lm_y3", "n/a", r":3: column lm_y3: 'n/a' is not a number"),
        ("lm_x1", "", r":3: column lm_x1: '' is not a number"),  # 9 of 10 landmarks
    ],
)
def test_malformed_cell_names_line_and_column(tmp_path, column, value, message):
    art = _artifact(tmp_path, ROWS)
    (art / FACES_CSV).write_text(_damage(ROWS, column, value), encoding="utf-8")
    with pytest.raises(InputError, match=message) as e:
        read_faces(art)
    assert "\n" not in str(e.value) and str(art / FACES_CSV) in str(e.value)


def test_wrong_field_count_and_missing_columns(tmp_path):
    art = _artifact(tmp_path, ROWS[:1])
    text = faces_text(ROWS[:1])
    (art / FACES_CSV).write_text(text + "x,y,z\n", encoding="utf-8")
    with pytest.raises(InputError, match=r":3: 3 fields, the header has 27"):
        read_faces(art)
    (art / FACES_CSV).write_text(text.rstrip("\n") + ",extra\n", encoding="utf-8")
    with pytest.raises(InputError, match=r":2: 28 fields, the header has 27"):
        read_faces(art)
    (art / FACES_CSV).write_text("source,identity,output,status,reason\nx,y,,skipped,\n")
    with pytest.raises(InputError, match="lacks column.s. face_index, x1"):
        read_faces(art)
    (art / FACES_CSV).unlink()
    with pytest.raises(InputError, match="faces.csv is missing"):
        read_faces(art)


def test_pack_of_a_damaged_faces_csv_fails_in_one_line(tmp_path):
    art = _artifact(tmp_path, ROWS[:1])
    (art / FACES_CSV).write_text(_damage(ROWS[:1] * 2, "n_faces", "two"), encoding="utf-8")
    r = CliRunner().invoke(app, ["pack", str(art), "-o", str(tmp_path / "p")])
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "faces.csv:3: column n_faces: 'two' is not an integer" in lines[0]
    assert not (tmp_path / "p").exists()
