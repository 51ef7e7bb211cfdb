"""Identity-overlap filtering: drop training identities that also appear in evaluation sets.

Names are compared after :func:`normalize_name`, which folds the ways one person's name is
written across datasets: case, spaces vs underscores, diacritics ("José" = "Jose"),
punctuation and hyphens ("O'Neill" = "ONeill", "Al-Hakim" = "Al Hakim" = "AlHakim"), and
German umlauts match both transliterations ("Schröder" = "Schroeder" = "Schroder").
Everything that is not a letter or digit is dropped, so token boundaries do not matter; word
order does ("Aznar, Jose Maria" is not folded onto "Jose Maria Aznar").

Lists are either built in (``lfw``: the 5,749 LFW names shipped in ``facecl/data``) or files
with one name per line; LFW's ``people.txt``, ``pairs.txt`` and ``lfw-names.txt`` formats
(tab- or space-separated names and integers) are read too.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from facecl.errors import InputError
from facecl.registry import Registry

# Letters NFKD does not decompose into base + combining mark.
_FOLD = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "ss",
        "æ": "ae",
        "Æ": "ae",
        "œ": "oe",
        "Œ": "oe",
        "ø": "o",
        "Ø": "o",
        "ł": "l",
        "Ł": "l",
        "đ": "d",
        "Đ": "d",
        "ð": "d",
        "Ð": "d",
        "þ": "th",
        "Þ": "th",
        "ı": "i",
    }
)


def normalize_name(name: str) -> str:
    """The comparison key of an identity name: ASCII-folded, lower case, alphanumerics only.

    >>> normalize_name("José María  Aznar") == normalize_name("Jose_Maria_Aznar")
    True
    """
    s = unicodedata.normalize("NFKD", name.translate(_FOLD))
    s = "".join(c for c in s if not unicodedata.combining(c))
    return "".join(c for c in s.casefold() if c.isalnum())


# German transliteration: "Schröder" is also written "Schroeder" (LFW does), and "Schroder".
_UMLAUT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})


def name_keys(name: str) -> frozenset[str]:
    """Every comparison key of a name: :func:`normalize_name`, plus the German umlaut
    spelling (ö -> oe) when the name has umlauts. Two names match when their keys meet."""
    keys = {normalize_name(name), normalize_name(name.translate(_UMLAUT))}
    return frozenset(k for k in keys if k)


def _is_int(token: str) -> bool:
    return token.lstrip("+-").isdigit()


def parse_name_lines(lines: Iterable[str]) -> list[str]:
    """Names from the lines of a list file (plain, or LFW people/pairs/names formats).

    A line with tabs is split on tabs and its integer fields (image counts, indexes, headers)
    are dropped. A line without tabs is one name, unless it holds several whitespace-separated
    tokens of which some are integers (a space-separated LFW line). Blank lines and ``#``
    comments are skipped.
    """
    names: list[str] = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "\t" in line:
            fields = [f.strip() for f in line.split("\t")]
        else:
            tokens = line.split()
            fields = tokens if len(tokens) > 1 and any(map(_is_int, tokens)) else [line]
        names.extend(f for f in fields if f and not _is_int(f))
    return names


BUILTIN_LISTS: Registry[str] = Registry("built-in name list")
BUILTIN_LISTS.register("lfw", "lfw_names.txt")


def builtin_list_path(name: str) -> Path:
    """The packaged file of a built-in list (``lfw``)."""
    filename = BUILTIN_LISTS.get(name)
    return Path(str(resources.files("facecl") / "data" / filename))


@dataclass(frozen=True)
class NameList:
    """One exclusion list: where it came from and its normalised names."""

    label: str  # "lfw" or the file path as given
    path: Path  # the file it was read from (packaged file for built-ins)
    names: frozenset[str]  # normalised keys
    raw_count: int  # names read, before normalisation and de-duplication

    def __contains__(self, identity: object) -> bool:
        return isinstance(identity, str) and not self.names.isdisjoint(name_keys(identity))


def load_name_list(spec: str) -> NameList:
    """``spec`` is a built-in list name (``lfw``) or a path to a list file.

    A built-in name wins over a file of the same name; write ``./lfw`` for such a file.
    """
    if spec in BUILTIN_LISTS:
        path = builtin_list_path(spec)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise InputError(
                f"exclusion list {spec!r} is neither a built-in list nor a file",
                f"built-in lists: {', '.join(BUILTIN_LISTS.names())}; or pass a file with "
                "one name per line",
            )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    raw = parse_name_lines(text.splitlines())
    keys = frozenset(k for name in raw for k in name_keys(name))
    if not keys:
        raise InputError(f"exclusion list {spec!r} ({path}) holds no names", "check the file")
    return NameList(label=spec, path=path, names=keys, raw_count=len(raw))


@dataclass(frozen=True)
class OverlapResult:
    """Which identities survive and which list removed each of the others."""

    kept: list[str]
    removed: dict[str, str]  # identity -> label of the first list that matched it

    def removed_by(self, label: str) -> list[str]:
        return sorted(i for i, lab in self.removed.items() if lab == label)


def filter_identities(identities: Iterable[str], lists: Iterable[NameList]) -> OverlapResult:
    """Split ``identities`` into kept and removed; each removal is credited to the first
    list (in the given order) that contains the identity."""
    lists = list(lists)
    kept: list[str] = []
    removed: dict[str, str] = {}
    for ident in identities:
        hit = next((nl.label for nl in lists if ident in nl), None)
        if hit is None:
            kept.append(ident)
        else:
            removed[ident] = hit
    return OverlapResult(kept=kept, removed=removed)


def normalization_collisions(identities: Iterable[str]) -> Mapping[str, list[str]]:
    """Identities whose names fold to the same key (worth a warning: probably one person)."""
    groups: dict[str, list[str]] = {}
    for ident in identities:
        groups.setdefault(normalize_name(ident), []).append(ident)
    return {k: sorted(v) for k, v in groups.items() if len(v) > 1}
