"""The engine's one error type."""


class EngineError(Exception):
    """A request the engine cannot serve (the TS side turns it into a LatheError)."""
