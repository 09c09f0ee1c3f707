"""JSON log lines for the relay: one object per record, references only.

Nothing the relay logs carries clinical content: messages name resources by reference
(`DiagnosticReport/abc/_history/3`), wards by id, and errors by type; secrets and tokens are
never passed to a logger (docs/relay.md "Logs").
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "t": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, separators=(",", ":"))


def configure(level: str = "info") -> None:
    """Send every log record to stderr as JSON (stdout carries only the ready line)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO; URLs may carry search parameters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
