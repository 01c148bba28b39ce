"""The web page: static files from ``sdfleet/ui/static`` served at ``/ui/`` (``/`` and ``/ui``
redirect there).

The page is plain HTML, CSS and ES modules — no build step — and talks only to the public JSON API
(``/v1/…``, and the A1111 API's read-only lists of samplers, schedulers and upscalers).
Assets are served under ``/ui/assets/<version>/…``, where the version is a digest of the files' names,
sizes and modification times: the HTML is revalidated on every load (``no-cache``), and everything it
references is immutable for a year, so a reload costs one small request and a release busts every cache.
Text assets are gzipped once and kept in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from sdfleet.errors import NotFound

router = APIRouter(tags=["ui"], include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parents[2] / "ui" / "static"
ASSET_PREFIX = "assets"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_TEXT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}
_COMPRESSIBLE = frozenset(_TEXT_TYPES)
# The page loads only its own scripts and styles; images may come from the blob store's origin
# (signed object-store URLs), and so may the fetches that read them back (PNG info, grid export).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; "
    "connect-src 'self' http: https:; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class _Asset:
    stamp: tuple[int, int]  # (mtime_ns, size) when read
    body: bytes
    gzipped: bytes | None
    etag: str
    media_type: str


_cache: dict[Path, _Asset] = {}
VERSION_TTL_SECONDS = 2.0


@dataclass(slots=True)
class _Version:
    checked_at: float = float("-inf")
    value: str = ""


_version = _Version()


def asset_version(root: Path = STATIC_DIR) -> str:
    """A digest of every static file's path, size and modification time (stat calls only,
    recomputed at most every couple of seconds, so edited files are picked up without a restart)."""
    now = time.monotonic()
    if root == STATIC_DIR and now - _version.checked_at < VERSION_TTL_SECONDS:
        return _version.value
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    value = digest.hexdigest()[:12]
    if root == STATIC_DIR:
        _version.checked_at, _version.value = now, value
    return value


def _resolve(relative: str) -> Path:
    """The file under the static root that ``relative`` names; 404 for anything else."""
    root = STATIC_DIR.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(f"no such file: {relative}", field="path")
    return path


def _load(path: Path) -> _Asset:
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _cache.get(path)
    if cached is not None and cached.stamp == stamp:
        return cached
    body = path.read_bytes()
    media_type = (
        _TEXT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )
    gzipped = gzip.compress(body, 6, mtime=0) if path.suffix in _COMPRESSIBLE and len(body) > 1024 else None
    asset = _Asset(stamp, body, gzipped, f'"{hashlib.sha256(body).hexdigest()[:20]}"', media_type)
    _cache[path] = asset
    return asset


def _send(request: Request, asset: _Asset, cache_control: str) -> Response:
    headers = {"cache-control": cache_control, "etag": asset.etag, "vary": "accept-encoding"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    content = asset.body
    if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        content = asset.gzipped
        headers["content-encoding"] = "gzip"
    return Response(content, media_type=asset.media_type, headers=headers)


@router.get("/")
async def root() -> RedirectResponse:
    """The web page lives at ``/ui/``."""
    return RedirectResponse("ui/", status_code=307)


@router.get("/ui")
async def ui_no_slash() -> RedirectResponse:
    return RedirectResponse("ui/", status_code=307)


@router.get("/ui/")
async def index(request: Request) -> Response:
    """The page itself, with its asset URLs pinned to the current version."""
    page = _load(_resolve("index.html"))
    html = page.body.replace(b"{{assets}}", f"{ASSET_PREFIX}/{asset_version()}".encode())
    versioned = _Asset(page.stamp, html, None, f'"{hashlib.sha256(html).hexdigest()[:20]}"', page.media_type)
    response = _send(request, versioned, REVALIDATE)
    response.headers["content-security-policy"] = CONTENT_SECURITY_POLICY
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["referrer-policy"] = "same-origin"
    return response


@router.get("/ui/assets/{version}/{path:path}")
async def asset(version: str, path: str, request: Request) -> Response:
    """One static file. Immutable when ``version`` is current; an old page's request still gets the
    file, but revalidated, so a stale version is never cached for long."""
    found = _load(_resolve(path))
    cache = IMMUTABLE if version == asset_version() else REVALIDATE
    response = _send(request, found, cache)
    response.headers["x-content-type-options"] = "nosniff"
    return response
