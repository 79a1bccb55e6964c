"""The one error users see for bad input: a paragraph naming the bad value and what is valid."""

import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2


class UserError(SystemExit):
    """Bad input or environment; the entrypoints print `message` and exit 2.

    It derives from SystemExit on purpose: Hydra (and OmegaConf, inside resolvers) wrap every
    Exception into a traceback, but let SystemExit through to our entrypoint untouched.
    """

    def __init__(self, message: str, code: int = EXIT_USER_ERROR):
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


def plain(error: BaseException) -> str:
    """An exception's message as one line of ours: torch's C++ internals ("[enforce fail at
    inline_container.cc:672]", "Exception raised from ...") left out."""
    import re

    text = re.sub(r"\[enforce fail at [^\]]*\]\s*\.?", "", str(error))
    text = re.split(r"Exception raised from ", text)[0]
    return " ".join(text.split()).strip(" .:") or type(error).__name__


def run_entrypoint(
    main: Callable[[], int | None],
    on_error: Callable[[], None] = lambda: None,
    usage: str | None = None,
):
    """Run a command's `main`; a UserError becomes `error: <message>` on stderr and its exit
    status (after `on_error`), any other outcome exits with main's return value. With `usage`
    (the command's docstring), `-h` or `--help` on the command line prints it and exits 0."""
    if usage and {"-h", "--help"} & set(sys.argv[1:]):
        import inspect

        try:
            print(inspect.cleandoc(usage).replace("`", ""), flush=True)
        except BrokenPipeError:  # (| head): the reader has what it wanted
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    try:
        status = main()
    except UserError as e:
        on_error()
        print(f"error: {e.message}", file=sys.stderr, flush=True)
        sys.exit(e.code)
    sys.exit(status or 0)
