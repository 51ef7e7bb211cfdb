"""The ``facecl`` command line: a thin shell over the stage packages.

Each stage package exposes ``cli.register(app)`` that adds its command(s). Expected errors
(``FaceclError``) become a one-line message and an exit code here and only here:
1 for user/data errors, 2 for usage errors. ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import warnings
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer

from facecl import __version__
from facecl.console import console
from facecl.errors import FaceclError

_state = {"verbose": False}


def _fail(e: FaceclError) -> typer.Exit:
    from facecl import lock

    lock.release_all()
    if _state["verbose"]:
        console.print_exception()
    console.print(f"[bold red]error:[/] {e.one_line()}", highlight=False)
    return typer.Exit(e.exit_code)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from facecl.oserrors import is_storage_failure, storage_error

        try:
            with one_line_warnings():
                return fn(*args, **kwargs)
        except FaceclError as e:
            raise _fail(e) from None
        except (OSError, RuntimeError) as e:
            if not is_storage_failure(e):
                raise
            raise _fail(storage_error(e)) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]; re-run the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Python warnings (torch, matplotlib, h5py ...) as one ``warning:`` line each on the
    console, without the source line Python adds, each text once."""
    seen: set[str] = set()
    old = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        text = " ".join(str(message).split())
        if text in seen:
            return
        seen.add(text)
        console.print(f"[yellow]warning:[/] {text} ({category.__name__})", highlight=False)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = old


class GuardedTyper(typer.Typer):
    """A Typer whose commands map ``FaceclError`` to exit codes."""

    def command(self, *args: Any, **kwargs: Any):
        register = super().command(*args, **kwargs)

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            register(_guard(fn))
            return fn

        return decorator


app = GuardedTyper(
    name="facecl",
    help="Raw face photos to deployable face embeddings, trained with the center-loss family.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"facecl {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks.")] = False,
) -> None:
    """facecl: align -> pack -> train -> embed -> verify (each stage writes an artifact)."""
    _state["verbose"] = verbose


# Order here is the order in --help.
STAGES = ["align", "pack", "train", "embed", "verify", "inspect", "study"]
for _name in STAGES:
    importlib.import_module(f"facecl.{_name}.cli").register(app)
