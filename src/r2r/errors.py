"""One error type for bad input (data files, saved systems, results), always naming where
the problem is. Outside any layer: the data readers, the routed system and the report
raise it alike."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input data: carries the file, the 1-based line (if any) and the field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        where = ""
        if self.file is not None:
            where = self.file + (f":{line}" if line is not None else "")
        if field is not None:
            where = f"{where} field '{field}'" if where else f"field '{field}'"
        super().__init__(f"{where}: {message}" if where else message)
