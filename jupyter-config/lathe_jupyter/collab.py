"""Read-only collaboration for share-link viewers.

jupyter-collaboration (jupyter_server_ydoc 3.0) checks only `read` on contents when a document
websocket opens, and then applies every sync message the client sends: any reader can edit the
shared notebook, and the edit is saved to disk. Here the handler's `on_message` drops, for viewers,
the messages that change the document (y-protocols sync step 2 and update, and the RAW "save"
request); sync step 1 (the viewer asking for what it lacks) and awareness (presence) pass.
"""

from __future__ import annotations

import logging
from typing import Any

from .auth import is_viewer

SYNC, AWARENESS, RAW = 0, 1, 2
SYNC_STEP2, SYNC_UPDATE = 1, 2


def writes_document(message: Any) -> bool:
    """True for a frame that would change the room's document (or save it)."""
    if not isinstance(message, (bytes, bytearray)) or not message:
        return False
    if message[0] == SYNC:
        return len(message) > 1 and message[1] in (SYNC_STEP2, SYNC_UPDATE)
    return message[0] == RAW


def install_read_only_collaboration(log: logging.Logger) -> bool:
    """Wraps YDocWebSocketHandler.on_message once; False if jupyter-collaboration is absent."""
    try:
        from jupyter_server_ydoc.handlers import YDocWebSocketHandler
    except ImportError:
        return False
    original = YDocWebSocketHandler.on_message
    if getattr(original, "_lathe_read_only", False):
        return True

    async def on_message(self: Any, message: Any) -> Any:
        if is_viewer(self.current_user) and writes_document(message):
            dropped = self.__dict__.get("_lathe_dropped", 0)
            if dropped == 0:
                log.warning("lathe share: viewer %s sent a document edit to %s; dropped (view-only share link)", self.current_user.username, self.request.path)
            self.__dict__["_lathe_dropped"] = dropped + 1
            return None
        return await original(self, message)

    on_message._lathe_read_only = True  # type: ignore[attr-defined]
    YDocWebSocketHandler.on_message = on_message  # type: ignore[method-assign]
    return True
