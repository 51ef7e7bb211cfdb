"""Text inputs a user hands over (pairs, image lists, name maps): read as UTF-8, a BOM
dropped, and a file that is not UTF-8 is one line naming the line and the byte."""

from __future__ import annotations

from pathlib import Path

from facecl.errors import InputError


def read_text(path: Path) -> str:
    """``path``'s text; an unreadable or non-UTF-8 file is a one-line ``InputError``, never a
    UnicodeDecodeError traceback."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}", "check the path") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        start = e.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data[:start].count(b"\n") + 1
        raise InputError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[start]:02x} at offset {start})",
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        ) from None
