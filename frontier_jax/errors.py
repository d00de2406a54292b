"""The one exception type for user mistakes. Its message is a single line naming the problem and the fix;
the CLI prints it and exits with status 2, never a traceback."""


class FrontierError(ValueError):
    """A user mistake: unknown GPU or model, malformed spec, bad value, unusable output path."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
