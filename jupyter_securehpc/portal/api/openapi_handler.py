"""``/openapi.json``: the API's OpenAPI 3 document (public: it describes the API, it holds no data)."""

from __future__ import annotations

import json

from tornado import web

from .. import API_PREFIX
from ..base import CSP
from ..openapi import document


class OpenAPIHandler(web.RequestHandler):
    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")

    def get(self) -> None:
        prefix = self.settings["service_prefix"].rstrip("/")
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(document(f"{prefix}/{API_PREFIX}")))
