"""`DataError` where the data layer's modules have always imported it (see r2r.errors)."""

from r2r.errors import DataError

__all__ = ["DataError"]
