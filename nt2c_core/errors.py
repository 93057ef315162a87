"""Exceptions raised on bad input: one clear message naming the file or parameter."""


class NT2CError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(NT2CError, ValueError):
    """A file or parameter given by the user is missing, unreadable or out of range."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception is a failed allocation: torch's CPU allocator and CUDA raise
    RuntimeError (subclasses), not MemoryError."""
    text = str(exc)
    return isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()
