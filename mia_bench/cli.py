"""``mia-bench``: the command's entry point; imported by nothing in the package.

Subcommands beyond Lightning's (``fleet``, ``audit``, ``compare``, ``sweep``, ``record``)
live in :mod:`mia_bench.commands`; ``fit``/``validate``/``test`` go to the LightningCLI
of :mod:`mia_bench.lightning_cli`. A user's mistake (:class:`mia_bench.errors.UserError`)
is printed as one line and the command exits with status 2 (or the error's own
``exit_status``: 75 when another process holds the run's lease, 76 when a fresh fit finds
the run already trained).
"""

from __future__ import annotations

import sys

from mia_bench.help_cache import (
    SUBCOMMANDS,
    cached_help,
    help_request,
    render_help,
    store_help,
    terminal_width,
)

DESCRIPTION = (
    "mia-bench: train target models and attack them every epoch. Subcommands beyond "
    "Lightning's: `mia-bench fleet --help` (train a group), `mia-bench audit --help`, "
    "`mia-bench compare --help`, `mia-bench sweep --help`, `mia-bench record --help` "
    "(more layers of a finished group, from its checkpoints)."
)


USAGE = """usage: mia-bench [-h] {fit,validate,test,fleet,audit,compare,sweep,record,...} ...

mia-bench: train target models and attack them every epoch.

subcommands:
  fit                 train a run (LightningCLI): mia-bench fit -c quickstart
  validate, test      evaluate a run's checkpoint (LightningCLI)
  fleet               train runs of a group, K at a time
  audit               leave-one-out audit of a group, or of one checkpoint
  compare             compare audited groups (recipes)
  sweep               fleets, audits and a comparison of many recipes
  record              more layers of a finished group, from its checkpoints
  configs             list the packaged configs (-c NAME), or copy them out for editing
  notebook            copy the recipe-comparison notebook out

`mia-bench SUBCOMMAND --help` for each one's flags."""


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``mia-bench`` command."""
    from mia_bench.errors import UserError  # importing mia_bench sets its environment

    argv = sys.argv[1:] if args is None else list(args)
    try:
        return _dispatch(argv)
    except UserError as err:
        print(f"mia-bench: error: {err}", file=sys.stderr)
        return getattr(err, "exit_status", 2)


def _dispatch(argv: list[str]) -> int:
    from mia_bench.commands import COMMANDS
    from mia_bench.console import quiet_libraries

    quiet_libraries()
    if argv in (["-h"], ["--help"]):  # answered without importing Lightning
        print(USAGE)
        return 0
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    subcommand = help_request(argv, SUBCOMMANDS)
    if subcommand is not None:  # from the cache when it is there (see help_cache)
        print(lightning_help(argv, subcommand), end="")
        return 0
    from mia_bench.lightning_cli import run_lightning_cli

    run_lightning_cli(argv, DESCRIPTION)
    return 0


def lightning_help(argv: list[str], subcommand: str) -> str:
    """The help text of ``fit``/``validate``/``test``: cached, else rendered and stored."""
    text = cached_help(subcommand)
    if text is None:
        from mia_bench.lightning_cli import run_lightning_cli

        width = terminal_width()
        text = render_help(lambda: run_lightning_cli(argv, DESCRIPTION))
        store_help(subcommand, text, width)
    return text
