"""Exceptions raised on bad input: one clear message naming the file or parameter."""


class NT2CError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(NT2CError, ValueError):
    """A file or parameter given by the user is missing, unreadable or out of range."""
