"""The portal's web pages (server-rendered, ``templates/``), on top of the API's ``ProjectService`` calls.

Register a page by adding ``(path, handler)`` to ``routes()``: ``path`` relative to the service's prefix, in
OpenAPI's ``{name}`` form (``/projects/{project}``); handlers subclass ``base.PageHandler``.
"""

from __future__ import annotations


def routes() -> list[tuple[str, type]]:
    return []
