"""A hostile input tree for the align and embed stages, built from real lfw_mini photos.

Every kind of bad input a careless or hostile user can hand over, each with the reason its
row must carry. ``build`` returns the tree and what a listing of it must account for:
``rows`` (source -> expected reason, "" for a decodable image) and ``hidden`` (files that
are ignored and counted, not rows). Nothing else may appear, nothing may be missing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
MINI = ROOT / "tests" / "data" / "lfw_mini" / "lfw_original_150px"
CROPS = ROOT / "facecl" / "embed" / "faces"  # real aligned PNGs (bundled)
PATH_MAX = 4096


@dataclass
class Hostile:
    root: Path
    rows: dict[str, str] = field(default_factory=dict)  # posix source -> reason ("" = fine)
    hidden: int = 0

    @property
    def decodable(self) -> list[str]:
        return sorted(s for s, r in self.rows.items() if not r)


def photo(identity: str, n: int = 1) -> Path:
    return MINI / identity / f"{identity}_{n:04d}.jpg"


def bad_crc_png(dst: Path) -> None:
    """A real PNG with one flipped bit inside its IDAT data (CRC no longer matches)."""
    data = bytearray(sorted(CROPS.glob("*.png"))[0].read_bytes())
    i = data.index(b"IDAT")
    n = int.from_bytes(data[i - 4 : i], "big")
    data[i + 4 + n // 2] ^= 0x01
    dst.write_bytes(bytes(data))


def deep_folder(base: Path) -> str:
    """A folder nested so deep that its full path exceeds PATH_MAX (listing it fails with
    ENAMETOOLONG even for root). Returns its posix path relative to ``base``."""
    name = "d" * 200
    fd = os.open(base, os.O_RDONLY)
    parts = []
    try:
        while len(str(base)) + sum(len(p) + 1 for p in parts) <= PATH_MAX + 200:
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            parts.append(name)
        with open(os.open("x.jpg", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as f:
            f.write(photo("AJ_Lamas").read_bytes())
    finally:
        os.close(fd)
    # The listing walks down while paths fit; the first too-long one is one read_error row.
    rel, depth = [], len(str(base))
    for p in parts:
        depth += len(p) + 1
        rel.append(p)
        if depth > PATH_MAX - 1:
            break
    return "/".join(rel)


def build(tmp: Path) -> Hostile:
    root = tmp / "hostile"
    outside = tmp / "outside"
    h = Hostile(root)
    for ident, n in (("Aaron_Eckhart", 1), ("Ann_Veneman", 2)):
        (root / ident).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo(ident, n), root / ident / f"{ident}_{n:04d}.jpg")
        h.rows[f"{ident}/{ident}_{n:04d}.jpg"] = ""
    # a folder that is a link to a folder outside the tree: followed, every image a row
    (outside / "Ann").mkdir(parents=True)
    for n in (1, 3):
        shutil.copy(photo("Ann_Veneman", n), outside / "Ann" / f"a{n}.jpg")
        h.rows[f"Linked/a{n}.jpg"] = ""
    (root / "Linked").symlink_to(outside / "Ann", target_is_directory=True)
    # a link back up the tree: one link_loop row, no endless walk
    (root / "Loop").mkdir()
    shutil.copy(photo("AJ_Lamas"), root / "Loop" / "l.jpg")
    (root / "Loop" / "again").symlink_to("..", target_is_directory=True)
    h.rows["Loop/l.jpg"] = ""
    h.rows["Loop/again"] = "link_loop"
    # read by content: no extension, a GIF
    (root / "Odd").mkdir()
    shutil.copy(photo("Aaron_Eckhart"), root / "Odd" / "photo_without_extension")
    h.rows["Odd/photo_without_extension"] = ""
    Image.open(photo("Ann_Veneman", 3)).save(root / "Odd" / "gif_photo.gif")
    h.rows["Odd/gif_photo.gif"] = ""
    # damaged files
    bad = root / "Bad"
    bad.mkdir()
    jpg = photo("AJ_Lamas").read_bytes()
    (bad / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    h.rows["Bad/truncated.jpg"] = "truncated"
    bad_crc_png(bad / "bad_crc.png")
    h.rows["Bad/bad_crc.png"] = "corrupt"
    (bad / "empty.jpg").write_bytes(b"")
    h.rows["Bad/empty.jpg"] = "empty_file"
    (bad / "text.jpg").write_text("not an image\n")
    h.rows["Bad/text.jpg"] = "not_an_image"
    (bad / "dangling.jpg").symlink_to(tmp / "nowhere.jpg")
    h.rows["Bad/dangling.jpg"] = "missing"
    # names that are not UTF-8 (a file and a folder)
    os.makedirs(os.fsencode(root) + b"/Caf\xe9", exist_ok=True)
    shutil.copy(photo("AJ_Lamas"), os.fsencode(root) + b"/Caf\xe9/x.jpg")
    h.rows["Caf\\xe9/x.jpg"] = "unsafe_name"
    shutil.copy(photo("AJ_Lamas"), os.fsencode(root) + b"/Aaron_Eckhart/\xff.jpg")
    h.rows["Aaron_Eckhart/\\xff.jpg"] = "unsafe_name"
    # a file directly in the root
    shutil.copy(photo("AJ_Lamas"), root / "root_photo.jpg")
    h.rows["root_photo.jpg"] = "no_identity"
    # hidden: one file, and a folder of three (three counts, not one)
    shutil.copy(photo("AJ_Lamas"), root / "Aaron_Eckhart" / ".hidden.jpg")
    (root / ".thumbs").mkdir()
    for n in range(3):
        shutil.copy(photo("AJ_Lamas"), root / ".thumbs" / f"t{n}.jpg")
    h.hidden = 4
    # a folder too deep to list
    (root / "Deep").mkdir()
    h.rows["Deep/" + deep_folder(root / "Deep")] = "read_error"
    return h
