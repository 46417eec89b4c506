"""The exceptions kgpipe raises on bad input.

Each message names the value, where it was (file:line when there is a file) and how to fix it.
"""


class KGPipeError(Exception):
    """Base class of every error kgpipe raises on purpose; the CLI prints these without a traceback."""


class KGFormatError(KGPipeError, ValueError):
    """A file does not follow the format it was read as."""

    def __init__(self, path: object, line: int | None, problem: str, fix: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}. {fix}")
        self.path = path
        self.line = line


class UnknownFormatError(KGPipeError, ValueError):
    """The format of a KG folder could not be detected or was not recognised."""


class UnknownEntityError(KGPipeError, KeyError):
    """An entity key or QID is not in the knowledge graph."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""
