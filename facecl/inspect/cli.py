"""``facecl inspect PATH``: an artifact's manifest and its lineage back to raw data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect(
        path: Annotated[Path, typer.Argument(help="An artifact directory (or its manifest.json).")],
        json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
        verify: Annotated[
            bool, typer.Option("--verify", help="Also check the checksums of the stage's files.")
        ] = False,
    ) -> None:
        """Print an artifact's manifest and its lineage as a tree (or JSON)."""
        from facecl.artifacts import lineage, read_manifest
        from facecl.console import console, emit_json
        from facecl.inspect.verify import verify_artifact

        manifest = read_manifest(path)
        tree = lineage(path)
        checked = verify_artifact(path, manifest) if verify else None
        if json_out:
            emit_json({"manifest": manifest.to_dict(), "lineage": tree, "verified": checked})
            return
        # Wrapped inside the tree, not cut at the width: the lineage is its paths.
        console.print(render_tree(tree, manifest.config, manifest.extra), soft_wrap=False)
        if checked is not None:
            console.print(f"[green]verified[/] {checked['files']} file(s) against the manifest")


def render_tree(node: dict[str, Any], config: dict[str, Any], extra: dict[str, Any]) -> Any:
    """The manifest (config, counts, short extra values) and the lineage as a rich Tree."""
    from rich.tree import Tree

    root = Tree(_label(node))
    cfg = root.add("[bold]config")
    for k, v in sorted(config.items()):
        cfg.add(f"{k} = {v!r}")
    counts = root.add("[bold]counts")
    _add_mapping(counts, node.get("counts", {}))
    if extra:
        ex = root.add("[bold]extra")
        _add_mapping(
            ex,
            {
                k: v
                for k, v in extra.items()
                if not isinstance(v, (list, dict)) or len(str(v)) < 200
            },
        )
    ins = root.add("[bold]inputs (lineage)")
    _add_inputs(ins, node)
    return root


def _label(node: dict[str, Any]) -> str:
    role = f" [dim]({node['role']})[/]" if node.get("role") else ""
    return f"[bold cyan]{node.get('schema', node.get('kind', '?'))}[/] {node['path']}{role}"


def _add_mapping(tree: Any, mapping: dict[str, Any]) -> None:
    for k, v in sorted(mapping.items()):
        if isinstance(v, dict):
            _add_mapping(tree.add(str(k)), v)
        else:
            tree.add(f"{k}: {v}")


def _add_inputs(tree: Any, node: dict[str, Any]) -> None:
    """Each input of ``node``: an artifact as a subtree (down to the raw data), else one line."""
    for inp in node.get("inputs", []):
        if "schema" in inp:
            flag = " [yellow](changed since)[/]" if inp.get("changed_since") else ""
            child = tree.add(_label(inp) + flag)
            _add_inputs(child, inp)
        else:
            role = f" [dim]({inp['role']})[/]" if inp.get("role") else ""
            miss = " [red](missing)[/]" if inp.get("missing") else ""
            miss += " [red](cycle)[/]" if inp.get("cycle") else ""
            sha = str(inp.get("sha256", ""))[:12]
            tree.add(f"{inp.get('kind', 'file')} {inp['path']}{role} sha256:{sha}{miss}")
