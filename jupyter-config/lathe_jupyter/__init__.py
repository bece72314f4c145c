"""Lathe's Jupyter server extension: read-only share links (`lathe rooms share`).

Enabled by `ServerApp.jpserver_extensions` in jupyter-config/jupyter_server_config.json; importable
because `npm start` puts jupyter-config/ on PYTHONPATH. When linked it installs ShareIdentityProvider
and ShareAuthorizer (auth.py) in place of Jupyter's defaults, and when loaded it makes the
collaboration document websocket read-only for viewers (collab.py). If another identity provider
or authorizer is configured (JupyterHub, say), it leaves both alone and share links are refused.
Either way, share tokens are masked in every log line (logs.py).
"""

from __future__ import annotations

from typing import Any

from .auth import SHARE_PARAM, ShareAuthorizer, ShareIdentityProvider, ViewerUser, is_viewer
from .tokens import ShareTokenError, verify_share_token

__all__ = ["SHARE_PARAM", "ShareAuthorizer", "ShareIdentityProvider", "ShareTokenError", "ViewerUser", "is_viewer", "verify_share_token"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "lathe_jupyter"}]


def _link_jupyter_server_extension(serverapp: Any) -> None:
    # Linking runs before the server builds its identity provider and authorizer, so the classes
    # can still be swapped here; only Jupyter's defaults are replaced, never someone's own.
    from jupyter_server.auth.authorizer import AllowAllAuthorizer
    from jupyter_server.auth.identity import PasswordIdentityProvider

    from .logs import install_log_scrubbing

    # First, so that no line logs a token, even with links disabled (they are then refused, and logged).
    install_log_scrubbing()
    idp, authz = serverapp.identity_provider_class, serverapp.authorizer_class
    ours = (idp is ShareIdentityProvider or idp is PasswordIdentityProvider) and (authz is ShareAuthorizer or authz is AllowAllAuthorizer)
    if not ours:
        serverapp.log.error(
            "lathe share: links disabled: ServerApp.identity_provider_class=%s and authorizer_class=%s are not Jupyter's defaults",
            idp.__name__,
            authz.__name__,
        )
        return
    serverapp.identity_provider_class = ShareIdentityProvider
    serverapp.authorizer_class = ShareAuthorizer
    # The access log shows `?lathe_share=[secret]`, as it does for Jupyter's own token (logs.py
    # masks it too, and in the lines this setting never reaches).
    serverapp.extra_log_scrub_param_keys = [*serverapp.extra_log_scrub_param_keys, SHARE_PARAM]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    import os

    from .collab import install_read_only_collaboration
    from .tokens import secret_file

    if not isinstance(serverapp.identity_provider, ShareIdentityProvider):
        return
    if not install_read_only_collaboration(serverapp.log):
        serverapp.log.info("lathe share: jupyter-collaboration is not installed; viewers get the notebook without live edits")
    serverapp.log.info("lathe share: read-only share links enabled (?%s=<token>, secret from %s)", SHARE_PARAM, "LATHE_ROOMS_SECRET" if os.environ.get("LATHE_ROOMS_SECRET") else secret_file())
