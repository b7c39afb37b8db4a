"""The one kind of error a user fixes: missing data, an unknown model or run, a bad `--set`.

The command line prints a UserError as one line and exits 2; anything else is a bug in tfzoo and shows its
traceback.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class UserError(ValueError):
    """Something the user asked for cannot be done as asked; the message says what to do instead."""


def user_errors(command: Callable[..., int], args, prog: str) -> int:
    """`command(args)`, with a UserError (or a name the zoo does not know) printed as one line `PROG: error: ...`
    and exit status 2; any other exception is a bug and propagates with its traceback."""
    import zoo

    try:
        return command(args)
    except (UserError, zoo.ZooError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


def module_main(prog: str, doc: str | None, add_arguments: Callable[[argparse.ArgumentParser], None],
                run: Callable[[argparse.Namespace], int], argv: list[str] | None = None) -> int:
    """A `python -m pipelines.<verb>` entry point: the verb's arguments, `run` with user errors as one line."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return user_errors(run, parser.parse_args(argv), prog)
