"""The artifact contract every stage uses.

A stage writes a directory holding its outputs and a ``manifest.json``::

    {
      "schema": "facecl.align/1",        # stage and schema version, checked on read
      "facecl_version": "0.1.0",
      "stage": "align",
      "created": "2026-11-24T08:40:00+00:00",
      "config": {...},                   # the fully resolved config (dataclass as dict)
      "inputs": [{"path": ..., "sha256": ..., "kind": "artifact|file|tree"}],
      "counts": {"processed": N, "written": N, "skipped": {"reason": N}},
      "status": "complete",
      "fingerprint": "...",              # sha256 of schema + config + input hashes
      "extra": {...}                     # stage-specific facts (file hashes, class stats, ...)
    }

Writes are atomic: a stage builds in ``<out>.partial/`` and ``os.replace`` moves the whole
directory into place only after the manifest is written, so a crash never leaves a directory
that looks complete. A ``.partial`` directory whose fingerprint matches is handed back to the
stage for resuming. Re-running a stage whose complete output has the same fingerprint is a
no-op; ``force=True`` rebuilds it.

Config fields marked ``field(metadata={"runtime": True})`` say how the work is done, not
what it produces (workers, threads, device): the manifest records them, but they are left
out of the fingerprint, so a run resumed with other runtime settings keeps its work.

Around that: :func:`facecl.outpath.check_output` refuses an output that is, contains or is
inside an input (or that cannot be written), and :mod:`facecl.lock` keeps a second process
off an output being written. Files are written with the permissions of the umask.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from facecl import __version__
from facecl.errors import ArtifactError, IntegrityError, SchemaVersionError

PARTIAL_SUFFIX = ".partial"

MANIFEST = "manifest.json"
PARTIAL_STATE = "_facecl_partial.json"

# The newest manifest schema version of each stage this code writes and reads.
# Version history lives in docs/architecture.md; bump here and there together.
SCHEMA_VERSIONS: dict[str, int] = {
    "align": 2,
    "pack": 1,
    "train": 1,
    "embed": 1,
    "verify": 1,
    "export": 1,
    "study": 1,
}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path, expected: str, listed_in: str = "manifest") -> None:
    """Raise ``IntegrityError`` unless ``path`` exists and hashes to ``expected`` (its entry
    in ``listed_in``)."""
    if not path.is_file():
        raise IntegrityError(f"{path} is missing", "rebuild the artifact with --force")
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(
            f"{path} is altered or truncated (sha256 {actual[:12]} != {listed_in} {expected[:12]})",
            "rebuild the artifact with --force",
        )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    return sha256_bytes(canonical_json(obj).encode())


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(o: Any) -> Any:
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass (or mapping) as a plain JSON-ready dict."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return json.loads(canonical_json(dataclasses.asdict(config)))
    return json.loads(canonical_json(dict(config)))


def runtime_fields(cls: type) -> frozenset[str]:
    """Dotted names of the fields of config class ``cls`` (nested dataclass fields
    included) marked ``metadata={"runtime": True}``."""
    out: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner = hints.get(f.name)
        if f.metadata.get("runtime"):
            out.add(f.name)
        elif isinstance(inner, type) and dataclasses.is_dataclass(inner):
            out |= {f"{f.name}.{n}" for n in runtime_fields(inner)}
    return frozenset(out)


def without_runtime(config: Mapping[str, Any], runtime: Iterable[str]) -> dict[str, Any]:
    """``config`` (a plain nested dict) without the dotted ``runtime`` keys."""
    out = json.loads(canonical_json(dict(config)))
    for name in runtime:
        *head, last = name.split(".")
        node = out
        for key in head:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


_UMASK: list[int] = []


def current_umask() -> int:
    """The process umask (read once; ``os.umask`` can only be read by setting it)."""
    if not _UMASK:
        try:
            line = next(
                ln
                for ln in Path("/proc/self/status").read_text().splitlines()
                if ln.startswith("Umask:")
            )
            _UMASK.append(int(line.split()[1], 8))
        except (OSError, StopIteration, ValueError):
            old = os.umask(0o022)
            os.umask(old)
            _UMASK.append(old)
    return _UMASK[0]


def honour_umask(path: str | os.PathLike, fd: int | None = None) -> None:
    """Give a file made by ``mkstemp`` (mode 0600) the mode any new file gets: 0666 & ~umask."""
    mode = 0o666 & ~current_umask()
    if fd is not None:
        os.fchmod(fd, mode)
    else:
        os.chmod(path, mode)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success fsync and ``os.replace`` it into place.

    On any error the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        honour_umask(tmp, fd)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file via a temp file in the same directory and ``os.replace``."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


# --------------------------------------------------------------------------- inputs


def safe_relpath(rel: object) -> bool:
    """True when ``rel`` (from an artifact) is a relative posix path that stays inside the
    artifact: not absolute, no ``..``, ``.`` or empty parts, no backslashes."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel:
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def is_artifact(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


TREE_HASH = "content"
"""The ``hash`` of a tree input in a manifest: its files' bytes (``tree_sha256``). A tree input
without it was recorded by an older facecl, which hashed names, sizes and mtimes."""


def tree_sha256(root: Path, files: Iterable[Path] | None = None) -> str:
    """Hash of a tree: every file's relative path and the sha256 of its bytes, looked up in
    the stat cache (:mod:`facecl.hashcache`) while its size and mtime are unchanged, so a
    copy or a re-mount that changes mtimes is the same tree and an edit is a change.
    Order-independent; folder links are followed (each real folder once); a folder that
    cannot be listed is part of the hash; names are hashed as their bytes
    (``os.fsencode``), so names that are not UTF-8 hash too."""
    from facecl.hashcache import HashCache

    with HashCache() as cache:
        return _tree_hash(Path(root), lambda p: cache.digest(str(p), p.stat()), files)


class ListingHash:
    """:func:`tree_sha256` fed one line at a time by a walk that meets the files in sorted
    order (``facecl.align.walk``), so nothing is held; ``ordered`` turns False when a line
    comes out of bytes order (then the hash is not the tree's: recompute it)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._last: bytes | None = None
        self.ordered = True

    def add(self, rel: str, digest: bytes | None = None) -> None:
        """A file ``rel`` (posix, below the root) with this content hash (None: unreadable)."""
        self._line(os.fsencode(rel) + b"\t" + (b"unreadable" if digest is None else digest))

    def add_unlistable(self, rel: str) -> None:
        """A folder ``rel`` that could not be listed."""
        self._line(os.fsencode(rel) + b"\t!unlistable")

    def _line(self, line: bytes) -> None:
        if self._last is not None:
            if line <= self._last:
                self.ordered = False
            self._h.update(b"\n")
        self._h.update(line)
        self._last = line

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def tree_content_sha256(root: Path) -> str:
    """:func:`tree_sha256` with every file read, whatever the stat cache holds, so an edit
    that keeps size and mtime is seen (``--verify-inputs``; it reads every byte)."""
    return _tree_hash(Path(root), lambda p: sha256_file(p).encode())


def _tree_hash(
    root: Path, describe: Callable[[Path], bytes], files: Iterable[Path] | None = None
) -> str:
    """sha256 of the sorted lines ``<relative name as bytes>\t<describe(file)>`` of every
    file below ``root`` (``unreadable`` where describing fails), plus one line per folder
    that cannot be listed."""
    if files is None:
        files, unreadable = _tree_files(root)
    else:
        unreadable = []
    lines = []
    for p in files:
        try:
            desc = describe(p)
        except OSError:
            desc = b"unreadable"
        lines.append(os.fsencode(p.relative_to(root)) + b"\t" + desc)
    lines += [os.fsencode(d.relative_to(root)) + b"\t!unlistable" for d in unreadable]
    return sha256_bytes(b"\n".join(sorted(lines)))


def _tree_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(files, folders that could not be listed) below ``root``, following folder links
    with each real folder visited once."""
    files: list[Path] = []
    errors: list[OSError] = []
    seen = {os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=errors.append):
        keep = []
        for d in dirnames:
            real = os.path.realpath(os.path.join(dirpath, d))
            if real not in seen:
                seen.add(real)
                keep.append(d)
        dirnames[:] = keep
        files += [Path(dirpath, f) for f in filenames]
    return files, [Path(e.filename) for e in errors if e.filename]


INPUT_CONTENT = "input_content_sha256"
"""The manifest ``extra`` key holding ``{tree input path: tree_content_sha256}``, recorded by
a run with ``--verify-inputs`` and compared by the next one."""


def input_contents(inputs: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """``{path: tree_content_sha256}`` of the tree inputs (files and artifacts are already
    hashed by content or by their manifest)."""
    return {
        i["path"]: tree_content_sha256(Path(i["path"])) for i in inputs if i.get("kind") == "tree"
    }


def input_ref(path: str | os.PathLike, tree_hash: str = "") -> dict[str, str]:
    """Describe one input for the manifest: an artifact (its manifest hash), a file, or a tree
    (``tree_hash``: its :func:`tree_sha256`, when the caller's own walk already computed it)."""
    p = Path(path).resolve()
    if is_artifact(p):
        return {"path": str(p), "sha256": sha256_file(p / MANIFEST), "kind": "artifact"}
    if p.is_file():
        return {"path": str(p), "sha256": sha256_file(p), "kind": "file"}
    if p.is_dir():
        sha = tree_hash or tree_sha256(p)
        return {"path": str(p), "sha256": sha, "kind": "tree", "hash": TREE_HASH}
    raise ArtifactError(f"input not found: {p}", "check the path")


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class Manifest:
    schema: str
    stage: str
    config: dict[str, Any]
    inputs: list[dict[str, str]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    status: str = "complete"
    facecl_version: str = __version__
    created: str = ""
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return parse_schema(self.schema)[1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def schema_for(stage: str) -> str:
    if stage not in SCHEMA_VERSIONS:
        raise ValueError(f"unknown stage {stage!r}")
    return f"facecl.{stage}/{SCHEMA_VERSIONS[stage]}"


def parse_schema(schema: str) -> tuple[str, int]:
    try:
        prefix, version = schema.split("/")
        ns, stage = prefix.split(".", 1)
        if ns != "facecl":
            raise ValueError
        return stage, int(version)
    except (ValueError, AttributeError):
        raise ArtifactError(
            f"malformed schema {schema!r}", "expected 'facecl.<stage>/<version>'"
        ) from None


def fingerprint(stage: str, config: Mapping[str, Any], inputs: list[dict[str, str]]) -> str:
    return sha256_json(
        {"schema": schema_for(stage), "config": config, "inputs": [i["sha256"] for i in inputs]}
    )


def read_manifest(path: str | os.PathLike, stage: str | None = None) -> Manifest:
    """Read and check ``<path>/manifest.json`` (or a manifest file given directly).

    Raises ``ArtifactError`` for a missing, partial or corrupt manifest or a wrong stage, and
    ``SchemaVersionError`` for a schema newer than this facecl understands.
    """
    p = Path(path)
    mpath = p if p.name == MANIFEST and p.is_file() else p / MANIFEST
    _refuse_partial(mpath.parent)
    if not mpath.is_file():
        partial = Path(str(p) + ".partial")
        if partial.is_dir():
            raise ArtifactError(
                f"{p} is incomplete (only {partial.name}/ exists)",
                "re-run the stage that writes it to resume",
            )
        raise ArtifactError(
            f"no facecl artifact at {p} (missing {MANIFEST})",
            "pass the output directory of a facecl stage",
        )
    try:
        raw = json.loads(mpath.read_text())
        if not isinstance(raw, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(
            f"corrupt manifest {mpath}: {e}", "re-run the stage with --force to rebuild it"
        ) from None
    missing = [k for k in ("schema", "stage", "config") if k not in raw]
    if missing:
        raise ArtifactError(
            f"corrupt manifest {mpath}: missing {', '.join(missing)}",
            "re-run the stage with --force to rebuild it",
        )
    _check_types(raw, mpath)
    m_stage, m_version = parse_schema(raw["schema"])
    if stage is not None and m_stage != stage:
        raise ArtifactError(
            f"{p} is a '{m_stage}' artifact, expected '{stage}'",
            f"pass the output of 'facecl {stage}'",
        )
    known = SCHEMA_VERSIONS.get(m_stage)
    if known is None:
        raise ArtifactError(f"{p}: unknown stage {m_stage!r}", "is this a facecl artifact?")
    if m_version > known:
        raise SchemaVersionError(
            f"{p} has schema {raw['schema']}, newer than this facecl reads "
            f"(facecl.{m_stage}/{known})",
            "upgrade facecl",
        )
    if raw.get("status", "complete") != "complete":
        raise ArtifactError(
            f"{p} has status {raw.get('status')!r}", "re-run the stage to complete it"
        )
    fields = {f.name for f in dataclasses.fields(Manifest)}
    return Manifest(**{k: v for k, v in raw.items() if k in fields})


# The JSON type of each manifest field (checked on read: a wrong type is one line, not a
# traceback wherever the field is used).
_FIELD_TYPES: dict[str, type] = {
    "schema": str,
    "stage": str,
    "config": dict,
    "inputs": list,
    "counts": dict,
    "status": str,
    "facecl_version": str,
    "created": str,
    "fingerprint": str,
    "extra": dict,
}
_JSON_NAMES: dict[type, str] = {str: "a string", dict: "an object", list: "a list"}


def _check_types(raw: Mapping[str, Any], mpath: Path) -> None:
    bad = [
        f"{k!r} is {type(raw[k]).__name__}, expected {_JSON_NAMES[t]}"
        for k, t in _FIELD_TYPES.items()
        if k in raw and not isinstance(raw[k], t)
    ]
    for i, inp in enumerate(raw.get("inputs") or []):
        if not isinstance(inp, dict) or not all(
            isinstance(inp.get(k), str) for k in ("path", "sha256")
        ):
            bad.append(f"inputs[{i}] is not an object with string 'path' and 'sha256'")
            break
    if bad:
        raise ArtifactError(
            f"corrupt manifest {mpath}: {bad[0]}", "re-run the stage with --force to rebuild it"
        )


def _refuse_partial(directory: Path) -> None:
    """An unfinished output (``OUT.partial/``, or a directory still holding the partial
    state) is never read as an artifact, even where a manifest was already written into it."""
    if directory.name.endswith(PARTIAL_SUFFIX) or (directory / PARTIAL_STATE).exists():
        raise ArtifactError(
            f"{directory} is an unfinished output (a {PARTIAL_SUFFIX} directory), not an artifact",
            "re-run the stage that writes it to finish it, then pass its final directory",
        )


def lineage(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of ``path`` and, recursively, of each artifact among its inputs.

    Each node: ``path``, ``stage``, ``schema``, ``status``, ``created``, ``counts`` and
    ``inputs``. An input keeps its manifest reference (``path``, ``sha256``, ``kind``, and
    ``role`` where the stage gave one); an artifact input is expanded into its own node, with
    ``changed_since`` (its manifest is no longer the one referenced) or ``missing``. An
    artifact reached along two paths (the same align behind the training pack and the
    evaluation embeddings) is expanded on both; a cycle is cut with ``cycle: true``.
    """
    return _lineage(Path(path).resolve(), (), {})


def _lineage(
    p: Path, ancestors: tuple[str, ...], memo: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    key = str(p)
    if key in memo:
        return memo[key]
    m = read_manifest(p)
    node: dict[str, Any] = {
        "path": key,
        "stage": m.stage,
        "schema": m.schema,
        "status": m.status,
        "created": m.created,
        "counts": m.counts,
        "inputs": [],
    }
    for inp in m.inputs:
        child: dict[str, Any] = dict(inp)
        ip = Path(inp["path"])
        if inp.get("kind") == "artifact":
            if str(ip) in ancestors or str(ip) == key:
                child["cycle"] = True
            elif is_artifact(ip):
                sub = _lineage(ip, (*ancestors, key), memo)
                child = {
                    **child,
                    **sub,
                    "changed_since": sha256_file(ip / MANIFEST) != inp["sha256"],
                }
            else:
                child["missing"] = True
        node["inputs"].append(child)
    memo[key] = node
    return node


# --------------------------------------------------------------------------- writing


class StageOutput:
    """Builds one stage's output directory atomically.

    Usage::

        out = StageOutput(path, "align", config, inputs, force=force)
        if out.up_to_date:            # same config and inputs: nothing to do
            return out.existing
        work = out.begin()            # <path>.partial/, fresh or resumed (out.resumed)
        ... write files under work ...
        manifest = out.commit(counts, extra)

    On construction the output path is checked (:func:`facecl.outpath.check_output`: not an
    input, not inside or around one, writable) and locked (:mod:`facecl.lock`) until the
    commit, or until it is found up to date. ``runtime`` names the dotted config keys left out
    of the fingerprint when ``config`` is a dict (for a dataclass, its fields marked
    ``runtime``). ``--force`` rebuilds only an artifact of the same stage; a forced start is
    recorded in the partial state, so the same forced command resumes it after a kill.

    ``verify_inputs`` (``--verify-inputs``, a runtime option: never in the fingerprint) hashes
    the bytes of every tree input: the hashes are recorded in the manifest's ``extra``
    (:data:`INPUT_CONTENT`) and the partial state, and an output is up to date (or a partial
    resumed) only when they match; an output recorded without them is stale.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        stage: str,
        config: Any,
        inputs: list[dict[str, str]],
        *,
        force: bool = False,
        resume: bool = True,
        runtime: Iterable[str] = (),
        verify_inputs: bool = False,
    ):
        from facecl import lock
        from facecl.outpath import check_output

        self.path = check_output(path, [i["path"] for i in inputs if i.get("path")])
        self.stage = stage
        self.config = config_dict(config)
        if dataclasses.is_dataclass(config) and not isinstance(config, type):
            runtime = {*runtime, *runtime_fields(type(config))}
        self.runtime = frozenset(runtime)
        self.inputs = inputs
        self.force = force
        self.resume = resume
        self.partial = Path(str(self.path) + PARTIAL_SUFFIX)
        self.fingerprint = fingerprint(stage, without_runtime(self.config, self.runtime), inputs)
        self.content = input_contents(inputs) if verify_inputs else None
        self.resumed = False
        self.existing: Manifest | None = None
        self.lock = lock.acquire(self.path)
        try:
            self._check_existing()
        except BaseException:
            lock.release(self.path)
            raise
        if self.existing is not None:
            lock.release(self.path)

    @property
    def up_to_date(self) -> bool:
        return self.existing is not None

    def _check_existing(self) -> None:
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise ArtifactError(
                f"output {self.path} exists and is not a directory", "choose another -o path"
            )
        if not (self.path / MANIFEST).exists():
            if any(self.path.iterdir()):
                raise ArtifactError(
                    f"output {self.path} exists, is not empty and is not a facecl artifact",
                    "choose another -o path or remove it",
                )
            return
        other = _recorded_stage(self.path)
        if other is not None and other != self.stage:
            how = "--force rebuilds only an artifact of the same stage; " if self.force else ""
            raise ArtifactError(
                f"output {self.path} is a '{other}' artifact, not a '{self.stage}' one",
                f"{how}choose another -o path, or remove it yourself",
            )
        if self.force:
            return
        try:
            m = read_manifest(self.path)
        except ArtifactError as e:
            raise ArtifactError(
                f"output {self.path} holds an unreadable artifact: {e.message}",
                "use --force to rebuild it",
            ) from None
        if m.fingerprint == self.fingerprint:
            self._check_content(m)
            self.existing = m
            return
        if any(i.get("kind") == "tree" and i.get("hash") != TREE_HASH for i in m.inputs):
            raise ArtifactError(
                f"output {self.path} was recorded by an older facecl, whose tree hash used "
                "file mtimes instead of content, so it cannot be matched to its inputs",
                "use --force to rebuild it once (later runs are matched by content)",
            )
        raise ArtifactError(
            f"output {self.path} exists with a different config or inputs",
            "use --force to overwrite it, or choose another -o path",
        )

    def _check_content(self, m: Manifest) -> None:
        """Under ``verify_inputs``: raise unless ``m`` recorded the content hashes of this
        run's tree inputs (and they are the same)."""
        if self.content is None:
            return
        recorded = m.extra.get(INPUT_CONTENT)
        if not isinstance(recorded, dict):
            raise ArtifactError(
                f"output {self.path} has no input content hashes (written without "
                "--verify-inputs), so it cannot be confirmed up to date",
                "use --force --verify-inputs to rebuild it with them",
            )
        changed = sorted(p for p, h in self.content.items() if recorded.get(p) != h)
        if changed:
            raise ArtifactError(
                f"input {changed[0]} changed since {self.path} was written (its content hash "
                "differs, though its files' sizes and mtimes may not)",
                "use --force to rebuild it, or choose another -o path",
            )

    def _resumable(self) -> bool:
        """Whether the existing ``.partial`` is this very run's (same fingerprint; under
        ``force``, one that a forced start of this run made)."""
        state_file = self.partial / PARTIAL_STATE
        if not self.resume or not state_file.is_file():
            return False
        try:
            state = json.loads(state_file.read_text())
        except (ValueError, UnicodeDecodeError):
            return False
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            return False
        if self.content is not None and state.get("content") != self.content:
            return False
        return bool(state.get("forced")) or not self.force

    def begin(self) -> Path:
        if self.up_to_date:
            raise RuntimeError("begin() on an up-to-date output")
        if self.partial.exists():
            if self._resumable():
                self.resumed = True
                return self.partial
            shutil.rmtree(self.partial)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir()
        self._write_state()
        return self.partial

    def _write_state(self) -> None:
        state: dict[str, Any] = {
            "fingerprint": self.fingerprint,
            "stage": self.stage,
            "forced": self.force,
        }
        if self.content is not None:
            state["content"] = self.content
        atomic_write_json(self.partial / PARTIAL_STATE, state)

    def commit(self, counts: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Manifest:
        from facecl import lock

        manifest = Manifest(
            schema=schema_for(self.stage),
            stage=self.stage,
            config=self.config,
            inputs=list(self.inputs),
            counts=json.loads(canonical_json(dict(counts))),
            status="complete",
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            fingerprint=self.fingerprint,
            extra=json.loads(canonical_json(self._extra(extra))),
        )
        try:
            atomic_write_json(self.partial / MANIFEST, manifest.to_dict())
            (self.partial / PARTIAL_STATE).unlink(missing_ok=True)
            self._publish()
        except BaseException:
            # Nothing that looks complete stays behind: the .partial is resumable again.
            (self.partial / MANIFEST).unlink(missing_ok=True)
            if self.partial.is_dir():
                with contextlib.suppress(OSError):
                    self._write_state()
            raise
        lock.release(self.path)
        return manifest

    def _extra(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        out = dict(extra or {})
        if self.content is not None:
            out[INPUT_CONTENT] = self.content
        return out

    def _publish(self) -> None:
        """Move ``.partial`` into place (an existing output is moved aside first, then
        removed; it is put back if the move fails)."""
        old = None
        if self.path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.old-", dir=self.path.parent))
            os.replace(self.path, old / "x")
        try:
            os.replace(self.partial, self.path)
        except BaseException:
            if old is not None:
                os.replace(old / "x", self.path)
                old.rmdir()
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _recorded_stage(path: Path) -> str | None:
    """The stage a manifest at ``path`` names (read leniently: None when unreadable)."""
    try:
        raw = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    stage = raw.get("stage") if isinstance(raw, dict) else None
    return stage if isinstance(stage, str) else None
