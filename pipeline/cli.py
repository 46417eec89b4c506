"""The `kgpipe` command line (typer): KG tools, TransE, linking, encoders, bundles and the demo.

Every error prints one line to stderr, never a traceback: exit 2 for bad input, 1 for a bug.
The commands live in `pipeline/commands/`; importing them registers them on the app.
"""

from __future__ import annotations

import sys

import typer

from kg.errors import KGPipeError
from pipeline.commands import bundle, encoder, extract, kg, link, relations, search, serve  # noqa: F401  (registers the commands)
from pipeline.commands.common import app


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app; every error is one line on stderr, exit 2 for bad input.

    A bug (any other exception) is one line too, exit 1, with the traceback when KGPIPE_DEBUG=1.
    """
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bar
    try:
        from kg.settings import settings

        settings()  # a bad KGPIPE_* setting or a missing KGPIPE_CONFIG file stops every command at once
        code = app(args=argv, standalone_mode=False)
    except KGPipeError as e:
        _fail(str(e), 2)
    except typer.Abort:
        _fail("interrupted", 130)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except typer.TyperException as e:  # click's usage errors: bad option, missing argument, ...
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())
            sys.exit(0)
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _fail(" ".join(message.split()) + hint, int(getattr(e, "exit_code", 2)))
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        _fail(f"{e.strerror or e}{where}", 2)
    except Exception as e:
        from kg.settings import settings

        if settings().debug:
            raise
        first = str(e).splitlines()[0][:300] if str(e) else ""
        _fail(
            f"internal error, a bug in kgpipe ({type(e).__name__}: {first}); please report it with "
            "the command, or run again with KGPIPE_DEBUG=1 for the traceback",
            1,
        )
    if isinstance(code, int) and code:
        sys.exit(code)


def _fail(message: str, code: int) -> None:
    print(f"kgpipe: error: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
