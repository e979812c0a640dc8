"""Answering a download of a job's stored file: a redirect to a presigned URL (when the storage has one and the
deployment asks for it), or the bytes streamed from storage with HTTP range requests, so a browser can seek in a
video (`206 Partial Content` + `Content-Range`). Clients get the bytes or a URL, never a server path."""

from __future__ import annotations

import re
from collections.abc import Iterator

from fastapi import Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from wanserve.jobs.service import JobContent, JobService

CHUNK_BYTES = 256 * 1024
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """The (first, last) byte of a single-range `Range` header; None to send the whole file (no header, or a form we
    do not serve, such as several ranges: RFC 9110 lets a server ignore `Range`); `"unsatisfiable"` for 416."""
    if not header:
        return None
    match = _RANGE_RE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = int(last)
        if length == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return "unsatisfiable"
    return start, end


def _chunks(service: JobService, key: str, start: int, length: int) -> Iterator[bytes]:
    with service.storage.open(key) as source:
        source.seek(start)
        left = length
        while left > 0:
            chunk = source.read(min(CHUNK_BYTES, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def content_response(
    request: Request,
    service: JobService,
    content: JobContent,
    filename: str | None = None,
    redirect: bool = False,
) -> Response:
    """The response for one stored job file (see the module docstring)."""
    if redirect:
        url = service.storage.url(content.key)
        if url is not None:
            return RedirectResponse(url, status_code=307)
    headers = {"Accept-Ranges": "bytes"}
    if filename:
        headers["Content-Disposition"] = f'inline; filename="{filename}"'
    wanted = parse_range(request.headers.get("range"), content.size)
    if wanted == "unsatisfiable":
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{content.size}"})
    start, end = wanted if isinstance(wanted, tuple) else (0, content.size - 1)
    length = max(0, end - start + 1)
    headers["Content-Length"] = str(length)
    status = 200
    if isinstance(wanted, tuple):
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{content.size}"
    body = _chunks(service, content.key, start, length)
    return StreamingResponse(body, status_code=status, headers=headers, media_type=content.media_type)
