"""Checksum verification of an artifact's files against its manifest.

A stage that wants ``facecl inspect --verify`` to check its files lists them in the
manifest's ``extra["files"]`` as ``{relative_path: sha256}``. An align artifact lists its
crops in ``crops.sha256`` (hashed in the manifest), checked by the align artifact's reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facecl.artifacts import Manifest, safe_relpath, verify_file
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
        verify_file(root / rel, expected)
    if manifest.stage == "align":  # its crops are listed in a sidecar the manifest hashes
        from facecl.align.artifact import verify_crops

        return {"files": len(files) + verify_crops(root)}
    return {"files": len(files)}
