"""The operator console: server-rendered pages over the store (inbox, one notification, dead
letters and quarantine, the Portal, an overview), for people who keep it open all day.

Modules: ``inbox``, ``details``, ``letters``, ``overview`` (what the pages read), ``charts``
(SVG drawn by the server), ``audit`` (the audit log), ``auth`` (passwords, the trusted proxy
header, the login limit), ``security`` (headers, CSRF, who is asking), ``web`` (rendering and the
checks every page and action go through), ``login``, ``pages``, ``actions`` (the routes), ``app``
(assembly, mounted at ``/console``).

It sits between the runtime (which mounts it on the admin listener or runs it as
``receiver console``, and hands it the Portal's view) and the packages it reads and acts
through: the store, and the worker's replay.
"""

from receiver.console.app import MOUNT, console_app, console_routes, standalone_app
from receiver.console.auth import hash_password
from receiver.console.web import PortalView

__all__ = [
    "MOUNT",
    "PortalView",
    "console_app",
    "console_routes",
    "hash_password",
    "standalone_app",
]
