"""Read-only share links: who a request is (ShareIdentityProvider) and what a viewer may do
(viewer_refusal, ShareAuthorizer).

Opening ``<base>lab/tree/<path>?lathe_share=<token>`` signs the browser in as a *viewer*: the login
cookie (Jupyter's own, signed with the server's cookie secret) then holds the viewer and its share
token, and every later request re-checks that token, so a viewer loses access the moment the link
expires. Everyone else authenticates exactly as before (Jupyter's token, password or cookie).

A viewer is checked twice:

1. ``viewer_refusal`` runs on every authenticated request (from ``get_user``), before any handler:
   only GET/HEAD of known read-only paths within the link's scope, plus the collaboration session
   lookup (PUT, which only returns the document's room id). A path is within the scope when its
   text is, and where it really is (symlinks resolved) is too, inside Jupyter's root. This covers handlers that never ask
   the Authorizer (JupyterLab's settings and workspaces, jupyter-server-proxy).
2. ``ShareAuthorizer`` answers Jupyter's own ``@authorized`` checks: viewers get ``read`` on a
   short list of resources and never ``write`` or ``execute`` (kernels, terminals, events, lsp).

Document edits a viewer sends over the collaboration websocket are dropped in collab.py.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.auth.identity import PasswordIdentityProvider, User
from tornado import web

from .tokens import ShareGrant, ShareTokenError, verify_share_token

#: Query parameter that carries the share token (Jupyter reads `token` as its own).
SHARE_PARAM = "lathe_share"

#: Resources a viewer may `read` through Jupyter's Authorizer (never events or server; lsp only its
#: status, as viewer_refusal lets nothing else under lsp/ through).
VIEWER_READABLE = frozenset({"contents", "kernelspecs", "sessions", "kernels", "config", "api", "nbconvert", "terminals", "csp", "lsp"})


@dataclass
class ViewerUser(User):
    """A share-link viewer. The lathe_* fields show up in /api/me's identity, so the browser
    extension can tell a viewer (hide run/cancel buttons, open notebooks read-only)."""

    lathe_role: str = "viewer"
    lathe_scope: str = ""
    lathe_expires: int = 0


def is_viewer(user: Any) -> bool:
    return isinstance(user, ViewerUser)


def _viewer(grant: ShareGrant, token: str, username: str | None = None) -> ViewerUser:
    name = grant.sub or "Viewer"
    user = ViewerUser(
        username=username or f"viewer-{uuid.uuid4().hex[:8]}",
        name=name,
        display_name=f"{name} (view only)",
        initials="V",
        lathe_scope=grant.scope,
        lathe_expires=grant.exp,
    )
    # Kept off the dataclass fields so /api/me never echoes the token.
    user.__dict__["_share_token"] = token
    return user


_CHANNELS = re.compile(r"^api/kernels/[^/]+/channels")

#: Read-only REST lists and models the JupyterLab page asks for (besides contents and collaboration).
VIEWER_API_READS = ("api/me", "api/status", "api/config", "api/kernelspecs", "api/kernels", "api/sessions", "api/terminals", "api/nbconvert")


def contents_root(handler: web.RequestHandler) -> str | None:
    """The folder on disk that contents, files/, view/ and nbconvert/ read under: the file
    contents manager's root (Jupyter's root dir unless configured apart)."""
    from jupyter_server.services.contents.fileio import FileManagerMixin

    cm = handler.settings.get("contents_manager")
    if isinstance(cm, FileManagerMixin):
        return str(cm.root_dir)
    return handler.settings.get("server_root_dir")


def viewer_refusal(handler: web.RequestHandler, user: ViewerUser) -> str | None:
    """Why a viewer may not make this request, or None if it may. Default: refused."""
    method = handler.request.method or ""
    base = getattr(handler, "base_url", "/") or "/"
    path = handler.request.path
    rel = unquote(path[len(base) :] if path.startswith(base) else path.lstrip("/"))
    scope = ShareGrant(user.lathe_scope, user.lathe_expires)
    root = contents_root(handler)

    def in_scope(p: str) -> str | None:
        shown = p.strip("/") or "/"
        if not scope.covers(p):
            return f"{shown} is outside this share link ({user.lathe_scope})"
        if root is not None and not scope.covers(p, root):
            # Jupyter follows symlinks, even out of its root: what counts is where the file is.
            return f"{shown} leaves this share link ({user.lathe_scope}) through a symbolic link"
        return None

    # JupyterLab asks for a document's collaboration room with a PUT; it writes nothing.
    if method == "PUT" and rel.startswith("api/collaboration/session/"):
        return in_scope(rel[len("api/collaboration/session/") :])
    if method not in ("GET", "HEAD", "OPTIONS"):
        return f"a view-only share link cannot {method} {rel}"
    if rel in ("lab", "logout") or rel.startswith(("lab/", "static/", "custom/", "kernelspecs/")):
        return None  # the JupyterLab page, its settings/workspace reads, assets
    if rel == "lathe-rooms" or rel.startswith("lathe-rooms/"):
        return None  # run rooms: the room server checks its own (read) room token
    if rel == "api/contents" or rel.startswith("api/contents/"):
        p = re.sub(r"/checkpoints(/[^/]*)?$", "", rel[len("api/contents") :])
        if method == "GET" and not scope.covers(p) and scope.leads_to(p, root):
            return None  # a folder on the way to the shared file: listed, filtered in _gate
        return in_scope(p)
    if rel.startswith(("files/", "view/")):
        return in_scope(rel.split("/", 1)[1])
    if rel.startswith("nbconvert/"):
        parts = rel.split("/", 2)
        return in_scope(parts[2] if len(parts) > 2 else "")
    if rel.startswith("api/collaboration/room/"):
        room = rel[len("api/collaboration/room/") :]
        if room.count(":") < 2:
            return None  # awareness-only rooms (presence)
        file_id = room.split(":", 2)[2]
        fid = handler.settings.get("file_id_manager")
        p = fid.get_path(file_id) if fid else None
        return in_scope(p) if p is not None else f"unknown document {room}"
    if rel.startswith("api/collaboration/"):
        return "forks, timelines and undo/redo are not available to a view-only share link"
    if _CHANNELS.match(rel):
        return "a view-only share link cannot connect to kernels"
    if rel.startswith("api/events"):
        return "server events are not available to a view-only share link"
    if rel in ("lsp/status", "server-proxy/servers-info"):
        return None  # lists the page polls (language servers, proxied servers); no access to them
    if rel == "api" or any(rel == p or rel.startswith(p + "/") for p in VIEWER_API_READS):
        return None
    return f"{rel or '/'} is not available to a view-only share link"


class _TokenlessTemplate:
    """A template that renders without Jupyter's token (see _hide_server_token)."""

    def __init__(self, template: Any) -> None:
        self._template = template

    def __getattr__(self, name: str) -> Any:
        return getattr(self._template, name)  # environment, name, … as the real template

    def render(self, *args: Any, **ns: Any) -> str:
        ns.update(token="", token_available=False)
        if isinstance(ns.get("page_config"), dict):
            ns["page_config"] = {**ns["page_config"], "token": ""}
        return self._template.render(*args, **ns)


def _hide_server_token(handler: Any) -> None:
    """Pages rendered for a viewer must not carry the server's token: JupyterLab's page config
    has it (`token`, which the frontend then sends as `Authorization: token …`), and Jupyter's
    page.html puts it in `data-jupyter-api-token` for a logged-in user. Either would turn a viewer
    into the owner. Every handler renders through `get_template`, overridden here per request."""
    get_template = getattr(handler, "get_template", None)
    if get_template is not None:
        handler.get_template = lambda name: _TokenlessTemplate(get_template(name))


class ShareIdentityProvider(PasswordIdentityProvider):
    """Jupyter's default identity provider, plus share-link viewers (see the module doc)."""

    def _refuse(self, handler: web.RequestHandler, status: int, reason: str) -> web.HTTPError:
        self.log.warning("lathe share: refused %s %s from %s: %s", handler.request.method, handler.request.path, handler.request.remote_ip, reason)
        # As Jupyter does for a bad Host: the error page must not ask for the user again.
        handler.current_user = handler._jupyter_current_user = None
        return web.HTTPError(status, reason)

    def _gate(self, handler: web.RequestHandler, user: ViewerUser) -> ViewerUser:
        reason = viewer_refusal(handler, user)
        if reason:
            raise self._refuse(handler, 403, f"{reason} (view-only share link)")
        _hide_server_token(handler)
        if handler.request.method == "GET" and hasattr(handler, "_finish_model"):
            # Contents answered to a viewer say writable: false, so JupyterLab shows its
            # read-only indicator and refuses to save; folders list only what is in scope.
            finish = handler._finish_model
            grant = ShareGrant(user.lathe_scope, user.lathe_expires)
            root = contents_root(handler)

            def finish_read_only(model: dict, location: bool = True) -> Any:
                model = {**model, "writable": False}
                if model.get("type") == "directory" and isinstance(model.get("content"), list):
                    model["content"] = [
                        {**m, "writable": False}
                        for m in model["content"]
                        if grant.covers(m.get("path", ""), root) or (m.get("type") == "directory" and grant.leads_to(m.get("path", ""), root))
                    ]
                return finish(model, location)

            handler._finish_model = finish_read_only
        return user

    async def get_user(self, handler: web.RequestHandler) -> User | None:
        if getattr(handler, "_jupyter_current_user", None):
            return handler._jupyter_current_user
        share = handler.get_query_argument(SHARE_PARAM, None)
        # Jupyter's own token wins over a share link: the owner stays the owner.
        if share is not None and not self.get_token(handler):
            try:
                grant = verify_share_token(share)
            except ShareTokenError as e:
                raise self._refuse(handler, 403, str(e)) from None
            cookie_user = self.get_user_cookie(handler)
            same = is_viewer(cookie_user) and cookie_user.__dict__.get("_share_token") == share
            user = cookie_user if same else _viewer(grant, share)
            if not same:
                self.set_login_cookie(handler, user)
                self.log.info("lathe share: %s signed in as viewer %s (scope %s)", handler.request.remote_ip, user.username, grant.scope)
            return self._gate(handler, user)
        user = await super().get_user(handler)
        if is_viewer(user):
            return self._gate(handler, user)
        return user

    async def get_user_token(self, handler: web.RequestHandler) -> User | None:
        # Jupyter's token with a viewer's cookie: the token holder is not the viewer.
        user = await super().get_user_token(handler)
        return self.generate_anonymous_user(handler) if is_viewer(user) else user

    def user_to_cookie(self, user: User) -> str:
        import json

        data = json.loads(super().user_to_cookie(user))
        if is_viewer(user):
            data["lathe_share"] = user.__dict__["_share_token"]
        return json.dumps(data)

    def user_from_cookie(self, cookie_value: str) -> User | None:
        import json

        data = json.loads(cookie_value)
        token = data.get("lathe_share")
        if token is None:
            return super().user_from_cookie(cookie_value)
        try:
            grant = verify_share_token(token)
        except ShareTokenError as e:
            # None makes Jupyter clear the cookie and treat the request as signed out.
            self.log.warning("lathe share: viewer %s signed out: %s", data.get("username"), e)
            return None
        return _viewer(grant, token, username=data.get("username"))


class ShareAuthorizer(Authorizer):
    """Allows everything to everyone but viewers, who may only read (see the module doc)."""

    def is_authorized(self, handler: Any, user: User, action: str, resource: str) -> bool:
        if not is_viewer(user):
            return True
        if action == "read" and resource in VIEWER_READABLE:
            return True
        if action == "write" and resource == "contents" and type(handler).__name__ == "DocSessionHandler":
            return True  # returns the room id of a document; see viewer_refusal
        self.log.warning("lathe share: viewer %s may not %s %s (%s %s)", user.username, action, resource, handler.request.method, handler.request.path)
        return False
