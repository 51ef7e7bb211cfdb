"""Checksum verification of an artifact's files against its manifest.

A stage that wants ``facecl inspect --verify`` to check its files lists them in the
manifest's ``extra["files"]`` as ``{relative_path: sha256}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facecl.artifacts import Manifest, safe_relpath, sha256_file
from facecl.errors import IntegrityError


def verify_artifact(path: str | Path, manifest: Manifest) -> dict[str, Any]:
    root = Path(path)
    if root.name == "manifest.json":
        root = root.parent
    files: dict[str, str] = manifest.extra.get("files", {})
    for rel, expected in sorted(files.items()):
        if not safe_relpath(rel):
            raise IntegrityError(
                f"{root}: manifest lists the file {rel!r}, outside the artifact",
                "the manifest was edited; rebuild the artifact with --force",
            )
        f = root / rel
        if not f.is_file():
            raise IntegrityError(f"{f} is missing", "rebuild the artifact with --force")
        actual = sha256_file(f)
        if actual != expected:
            raise IntegrityError(
                f"{f} is altered or truncated (sha256 {actual[:12]} != manifest {expected[:12]})",
                "rebuild the artifact with --force",
            )
    return {"files": len(files)}
