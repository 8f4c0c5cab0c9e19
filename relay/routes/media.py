"""Inbound media by id, from the media store the connector fills."""

from __future__ import annotations

import re

from starlette.responses import Response

from relay.endpoints import Call, Endpoint, Reply
from relay.problems import Problem

MEDIA_ID = re.compile(r"^med_[0-9a-f]{32}$")
_MIME_PART = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MIMETYPE = re.compile(rf"^{_MIME_PART}/{_MIME_PART}(;[ A-Za-z0-9=._-]{{1,64}})?$")


async def get_media(call: Call) -> Response:
    media_id = call.param("media_id")
    media = await call.state.stores.media.get(media_id) if MEDIA_ID.fullmatch(media_id) else None
    if media is None:
        raise Problem(404, "unknown_media", f"no media {media_id!r}")
    mimetype = media.mimetype
    return Response(
        media.data,
        media_type=mimetype if _MIMETYPE.fullmatch(mimetype) else "application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{media_id}"'},
    )


endpoints = [
    Endpoint(
        "GET", "/v1/instances/{instance}/media/{media_id}", get_media, "getMedia",
        "Download inbound media by id", "messages",
        {200: Reply("The bytes, with their mimetype.", media_type="application/octet-stream"),
         404: Reply("`unknown_media`.")},
    ),
]  # fmt: skip
