"""Subcommands imported on first use, so `etwsensor --version` and `etwsensor replay` do not pay for the
rule compiler's parser, DuckDB or the live layer they never run.

``LazyGroup.lazy`` maps a command name to ``module:attribute``: a ``typer.Typer`` (a command group) or a
plain function (one command), loaded and turned into a click command only when that name is resolved or a
help listing needs it.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import typer
from typer.core import TyperGroup


class LazyGroup(TyperGroup):
    lazy: ClassVar[dict[str, tuple[str, str]]] = {}  # name -> (module:attribute, one-line help)

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in self.lazy if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.add_command(_load(cmd_name, self.lazy[cmd_name][0]), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The listing uses each lazy command's one-line help, so `--help` imports nothing heavy."""
        rows = [(name, cmd.get_short_help_str(80)) for name, cmd in self.commands.items() if not cmd.hidden]
        rows += [(name, text) for name, (_, text) in self.lazy.items() if name not in self.commands]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _load(name: str, target: str) -> Any:  # a click command (typer vendors click since 0.20)
    """The click command for ``target``, built as if it had been added to a plain-text (no rich boxes) app."""
    module_name, _, attribute = target.partition(":")
    obj: Any = getattr(importlib.import_module(module_name), attribute)
    wrapper = typer.Typer(rich_markup_mode=None, add_completion=False)
    if isinstance(obj, typer.Typer):
        wrapper.add_typer(obj, name=name)
    else:
        wrapper.command(name)(obj)
        wrapper.callback()(lambda: None)  # a group of one, so the command keeps its own name
    return typer.main.get_group(wrapper).commands[name]
