"""CLI options generated from the frozen config dataclasses: one home for defaults and help.

A config dataclass declares each setting once: its type (``int``, ``float``, ``str``, ``bool``,
``Path``, ``X | None``, ``Literal[...]`` choices, a tuple), its default and, in the string
literal under the field, its help. ``config_command`` turns such classes into Typer options of
a command::

    @app.command("align")
    @config_command(cfg=AlignConfig, runtime=Options(AlignRuntime, panel="Runtime"))
    def align(inputs: ..., cfg: Given, runtime: Given, force: ...) -> None:
        AlignConfig(**cfg)  # cfg holds only the options given on the command line

Each field becomes ``--field-name`` (``--x/--no-x`` for a bool) whose CLI default is None
("not given"), so the caller merges CLI over a config file over the dataclass defaults; the
help shows the field docstring and ``[default: ...]`` from the dataclass. A tuple of numbers
is written ``a,b,c`` (a variable-length one may also be repeated); a tuple of strings is a
repeated option. A field whose type is a dataclass (with ``default_factory``) is flattened:
its fields become ``--{prefix}{inner}`` options and come back as a nested dict.

Field ``metadata`` may refine an option: ``cli_name`` (``"--lambda"`` for ``lam``),
``cli_short`` (``"-o"``), ``cli_exclude`` (no option), ``cli_help`` (text after the
docstring), ``cli_choices`` (a sequence, or a callable returning one, for a ``str`` field whose
names live in a registry; it is called when the command is built, so keep it cheap) and, on a
nested dataclass field, ``cli_prefix`` (default ``"{field}-"``).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import typer

Given = dict[str, Any]
"""The options given on the command line, nested like the dataclass (no None values)."""

_SCALARS = (int, float, str, bool, Path)
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}


@dataclass(frozen=True)
class Options:
    """A config class and how its options appear on one command."""

    cls: type
    prefix: str = ""
    """Prepended to every option name (``"head-"`` -> ``--head-s``)."""
    exclude: tuple[str, ...] = ()
    """Field names (dotted for nested fields) left off this command."""
    only: tuple[str, ...] = ()
    """When given: only these fields (dotted for nested fields) are options."""
    defaults: Mapping[str, Any] | None = None
    """Defaults shown instead of the dataclass's (dotted or leaf field names), for a command
    that merges its own base over the dataclass (e.g. ``facecl toy``)."""
    panel: str | None = None
    """Rich help panel the options are listed under (None = the command's Options)."""

    def __hash__(self) -> int:
        return hash((self.cls, self.prefix, self.exclude, self.only, self.panel))

    def skips(self, path: tuple[str, ...]) -> bool:
        dotted = ".".join(path)
        if dotted in self.exclude:
            return True
        return bool(self.only) and not any(
            dotted == o or dotted.startswith(o + ".") or o.startswith(dotted + ".")
            for o in self.only
        )

    def default_for(self, path: tuple[str, ...], value: Any) -> Any:
        if not self.defaults:
            return value
        for key in (".".join(path), path[-1]):
            if key in self.defaults:
                return self.defaults[key]
        return value


@dataclass(frozen=True)
class Leaf:
    """One generated option: where its value goes and how Typer declares it."""

    path: tuple[str, ...]
    """Field names from the outer class down (``("center", "alpha")``)."""
    param: str
    """The Python parameter name in the generated signature."""
    opts: tuple[str, ...]
    """Option declarations (``("--batch-size",)``, ``("--flip/--no-flip",)``)."""
    annotation: Any
    """``Annotated[T | None, typer.Option(...)]``."""
    default: Any
    """The dataclass default (shown in the help)."""
    join: bool = False
    """A repeatable tuple option: the parsed pieces are concatenated into one tuple."""
    csv: bool = False
    """A tuple of numbers written ``a,b,c`` on the command line."""

    @property
    def flag(self) -> str:
        """The option as a user types it (``--batch-size``; ``--flip`` for a bool)."""
        return self.opts[0].split("/")[0]


# --------------------------------------------------------------------------- docstrings


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}``: the string literal right under each annotated field of ``cls``
    (and of its dataclass bases), read from the source; whitespace is normalised."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0]
        if not isinstance(body, ast.ClassDef):
            continue
        stmts = body.body
        for stmt, nxt in zip(stmts, stmts[1:], strict=False):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
    return docs


# --------------------------------------------------------------------------- types


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _tuple_items(annotation: Any) -> tuple[Any, int | None] | None:
    """``tuple[float, ...]`` -> ``(float, None)``; ``tuple[int, int]`` -> ``(int, 2)``."""
    if typing.get_origin(annotation) is not tuple:
        return None
    args = typing.get_args(annotation)
    if len(args) == 2 and args[1] is Ellipsis:
        return args[0], None
    if args and all(a is args[0] for a in args):
        return args[0], len(args)
    raise TypeError(f"tuple fields must hold one item type, got {annotation}")


def _number_parser(item: type, n: int | None, flag: str) -> Callable[[str], tuple[Any, ...]]:
    def parse(text: str) -> tuple[Any, ...]:
        if isinstance(text, tuple):  # already parsed (a default passed through)
            return text
        try:
            values = tuple(item(v) for v in str(text).replace(" ", "").split(",") if v)
        except ValueError:
            values = None
        if values is None or (n is not None and len(values) != n):
            want = f"{_NUMBER_WORDS.get(n, n)} " if n else ""
            raise typer.BadParameter(
                f"{text!r}: expected {want}comma-separated {item.__name__} values",
                param_hint=f"'{flag}'",
            )
        return values

    return parse


def _choices(f: dataclasses.Field[Any], annotation: Any) -> Any:
    src = f.metadata.get("cli_choices")
    if src is None:
        return annotation
    names = tuple(src() if callable(src) else src)
    return Literal[names]


# --------------------------------------------------------------------------- help


def _show(value: Any, flag: str) -> str:
    if isinstance(value, bool):
        return flag.lstrip("-") if value else "no-" + flag.lstrip("-")
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(_show(v, flag) for v in value)
    return str(value)


def _help(doc: str, extra: str | None, default: Any, flag: str) -> str:
    from rich.markup import escape

    text = re.sub(r"``([^`]*)``", r"\1", doc)
    parts = [escape(t) for t in (text, extra) if t]
    if default is not None and default != () and default != "":
        parts.append(escape(f"[default: {_show(default, flag)}]"))
    return " ".join(parts)


# --------------------------------------------------------------------------- leaves


def _field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _leaf(
    f: dataclasses.Field[Any],
    annotation: Any,
    default: Any,
    path: tuple[str, ...],
    opts: Options,
    doc: str,
) -> Leaf:
    meta = f.metadata
    flag = meta.get("cli_name") or "--" + opts.prefix + f.name.replace("_", "-")
    base = _choices(f, _strip_optional(annotation))
    decls: list[str] = [flag]
    kw: dict[str, Any] = {}
    join = csv = False
    if base is bool:
        decls = [f"{flag}/--no-{flag.lstrip('-')}"]
    elif (tup := _tuple_items(base)) is not None:
        item, n = tup
        if item is str:
            base, kw["metavar"] = list[str], "<text>"
            join = True
        elif item in (int, float):
            kw["parser"], csv = _number_parser(item, n, flag), True
            sig = ",".join([item.__name__] * (n or 1)) + ("" if n else ",...")
            kw["metavar"] = f"<{sig}>"
            base, join = (list[str], True) if n is None else (str, False)
        else:
            raise TypeError(f"{'.'.join(path)}: unsupported tuple item type {item}")
    elif base not in _SCALARS and typing.get_origin(base) is not Literal:
        raise TypeError(
            f"{'.'.join(path)}: no CLI option for type {annotation!r}; "
            "mark the field metadata={'cli_exclude': True}"
        )
    if meta.get("cli_short"):
        decls.append(meta["cli_short"])
    option = typer.Option(
        *decls,
        help=_help(doc, meta.get("cli_help"), default, flag),
        show_default=False,
        rich_help_panel=opts.panel,
        **kw,
    )
    return Leaf(
        path=path,
        param="__".join(path),
        opts=tuple(decls),
        annotation=Annotated[base | None, option],
        default=default,
        join=join,
        csv=csv,
    )


def leaves(spec: type | Options, _path: tuple[str, ...] = (), _base: Any = None) -> list[Leaf]:
    """The options of a config class (nested dataclass fields flattened), in field order.

    Defaults shown are those of ``_base`` (the outer field's default instance) when given."""
    opts = spec if isinstance(spec, Options) else Options(spec)
    cls = opts.cls
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out: list[Leaf] = []
    for f in dataclasses.fields(cls):
        path = (*_path, f.name)
        if f.metadata.get("cli_exclude") or opts.skips(path):
            continue
        annotation = hints[f.name]
        default = getattr(_base, f.name) if _base is not None else _field_default(f)
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            prefix = f.metadata.get("cli_prefix", f.name.replace("_", "-") + "-")
            inner = dataclasses.replace(opts, cls=annotation, prefix=opts.prefix + prefix)
            out += leaves(inner, path, default)
            continue
        default = opts.default_for(path, default)
        out.append(_leaf(f, annotation, default, path, opts, docs.get(f.name, "")))
    return out


# --------------------------------------------------------------------------- values


def given(values: Mapping[str, Any]) -> Given:
    """``values`` without the Nones (options not given), recursively; empty dicts dropped."""
    out: Given = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            value = given(value)
            if not value:
                continue
        if value is None:
            continue
        out[key] = value
    return out


def build(cls: type, values: Mapping[str, Any]) -> Any:
    """``cls`` from a nested dict of given values (nested dataclass fields built the same
    way from their default); unset fields keep the dataclass defaults."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        inner = hints[f.name]
        if isinstance(inner, type) and dataclasses.is_dataclass(inner) and isinstance(value, dict):
            base = _field_default(f)
            value = dataclasses.replace(base, **value) if base is not None else build(inner, value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _collect(group: list[Leaf], kwargs: dict[str, Any]) -> Given:
    out: Given = {}
    for leaf in group:
        value = kwargs.pop(leaf.param, None)
        if value is None or (leaf.join and not value):
            continue
        if leaf.join:
            value = tuple(
                v for piece in value for v in (piece if isinstance(piece, tuple) else (piece,))
            )
        node = out
        for key in leaf.path[:-1]:
            node = node.setdefault(key, {})
        node[leaf.path[-1]] = value
    return out


def find_option(specs: Sequence[type | Options], key: str) -> tuple[int, Leaf] | None:
    """The option for a settings key: a dotted field path (``center.alpha``), an option name
    (``lambda``, ``--lambda``) or a field name that only one option has (``alpha``).
    Returns (index of the spec it belongs to, its leaf), or None."""
    found = [(i, lf) for i, spec in enumerate(specs) for lf in leaves(spec)]
    norm = key.lstrip("-").replace("-", "_")
    tests: list[Callable[[Leaf], bool]] = [
        lambda lf: ".".join(lf.path) == norm,
        lambda lf: lf.flag.lstrip("-").replace("-", "_") == norm,
        lambda lf: lf.path[-1] == norm,
    ]
    for test in tests:
        hits = [(i, lf) for i, lf in found if test(lf)]
        if len(hits) == 1:
            return hits[0]
    return None


# --------------------------------------------------------------------------- the decorator


def config_command(**groups: type | Options) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Typer command: each keyword names a parameter of the command that receives
    the given options of that config class as a nested dict (``Given``). The generated options
    are listed where that parameter stands in the signature."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn, eval_str=True)
        missing = set(groups) - set(sig.parameters)
        if missing:
            raise TypeError(f"{fn.__name__} has no parameter(s) {sorted(missing)}")
        specs: dict[str, list[Leaf]] = {}
        params: list[inspect.Parameter] = []
        for name, p in sig.parameters.items():
            if name in groups:
                specs[name] = [
                    dataclasses.replace(lf, param=f"{name}__{lf.param}")
                    for lf in leaves(groups[name])
                ]
                params += [
                    inspect.Parameter(
                        lf.param,
                        inspect.Parameter.KEYWORD_ONLY,
                        default=None,
                        annotation=lf.annotation,
                    )
                    for lf in specs[name]
                ]
            else:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
        _check_unique(fn.__name__, params)

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            for name, group in specs.items():
                kwargs[name] = _collect(group, kwargs)
            return fn(**kwargs)

        new_sig = inspect.Signature(params, return_annotation=sig.return_annotation)
        wrapper.__signature__ = new_sig  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        wrapper.leaves = specs  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _option_names(p: inspect.Parameter) -> list[str]:
    for meta in getattr(p.annotation, "__metadata__", ()):
        decls: Sequence[str] = getattr(meta, "param_decls", None) or ()
        default = getattr(meta, "default", ...)
        if isinstance(default, str) and default.startswith("-"):
            decls = (default, *decls)
        return [n for d in decls for n in d.split("/")]
    return []


def _check_unique(command: str, params: list[inspect.Parameter]) -> None:
    seen: dict[str, str] = {}
    for p in params:
        for name in _option_names(p):
            if name in seen:
                raise TypeError(f"{command}: option {name} of {p.name} is also {seen[name]}")
            seen[name] = p.name
