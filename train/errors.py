"""The one error users see for bad input: a paragraph naming the bad value and what is valid."""

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
