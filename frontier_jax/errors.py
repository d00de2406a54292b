"""The one exception type for user mistakes. Its message is a single line naming the problem and the fix;
the CLI prints it and exits with status 2, never a traceback.

A fix that is an option is named the way the caller spells it: `option("--resume", "resume=True")` in a message
reads "--resume" in the CLI's line (`FrontierError.cli_message`) and "resume=True" in the Python exception."""
from __future__ import annotations

import re

_OPTION = re.compile(r"\[\[(.+?)\|(.+?)\]\]")


def option(cli: str, api: str) -> str:
    """An option inside a FrontierError message: `cli` on the command line, `api` in Python."""
    return f"[[{cli}|{api}]]"


class FrontierError(ValueError):
    """A user mistake: unknown GPU or model, malformed spec, bad value, unusable output path."""

    exit_code = 2

    def __init__(self, message: str):
        text = " ".join(str(message).split())
        super().__init__(_OPTION.sub(r"\2", text))
        self.cli_message = _OPTION.sub(r"\1", text)


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM at a consistent point (the partial file, if any, is resumable)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
