"""Share tokens never reach a log line.

Jupyter's access log (jupyter_server.log.log_request) scrubs the query of the request URI it
prints, with ``extra_log_scrub_param_keys``, but that is the only line it scrubs. A refused request
is also logged by tornado's ``RequestHandler.log_exception`` (``403 GET <uri> (ip): <reason>``) with
the raw URI; Jupyter's cross-origin checks log the raw Referer, which carries the link a viewer
opened; a reason can quote a path, and a token may sit in the path. So the scrubbing is done once,
for every record of every logger in the process: a log record factory rewrites the formatted
message (and the formatted traceback) before any handler sees it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from .tokens import PREFIX

#: The share link's query parameter, also percent-encoded (`lathe_share%3D…`, as a Referer may quote it).
_PARAM = re.compile(r"(lathe_share(?:=|%3d))[^&\s#'\"<>]+", re.IGNORECASE)
#: A room token anywhere: `lr1.<payload>.<signature>`, dots possibly percent-encoded.
_TOKEN = re.compile(rf"(?<![\w-]){PREFIX}(?:\.|%2e)[\w-]+(?:(?:\.|%2e)[\w-]*)?", re.IGNORECASE)

MASK = "[secret]"


def scrub(text: str) -> str:
    """``text`` with every share or room token replaced by ``[secret]``."""
    if PREFIX not in text.lower() and "lathe_share" not in text.lower():
        return text
    return _TOKEN.sub(MASK, _PARAM.sub(lambda m: m.group(1) + MASK, text))


def install_log_scrubbing() -> None:
    """Wraps the process's log record factory once (it chains to the one already set)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_lathe_scrub", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:
            return record  # a bad format string: logging reports it when the record is emitted
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            if scrub(text) != text:
                record.exc_text = scrub(text)  # Formatter.format uses it instead of the traceback
        return record

    factory._lathe_scrub = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
