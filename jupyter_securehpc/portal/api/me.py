"""``/me``: who the portal thinks you are."""

from __future__ import annotations

from ..base import APIHandler


class MeHandler(APIHandler):
    async def get(self) -> None:
        assert self.caller is not None
        self.reply({"name": self.caller.name, "admin": self.caller.is_admin})
