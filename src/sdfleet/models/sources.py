"""Where a registry model's bytes come from: a local file, or a URL plus the headers it needs.

Registry sources map to downloads as follows (no network here, only the mapping):

- an absolute path or ``file://…``: the file itself, used in place after its sha256 is checked;
- ``http(s)://…``: that URL;
- ``hf://org/repo[@revision]/path`` (also ``hf://datasets/…`` and ``hf://spaces/…``):
  ``https://huggingface.co/org/repo/resolve/<revision or main>/path``, with the worker's
  Hugging Face token as ``Authorization: Bearer`` when it has one;
- ``civitai://version/<id>[?query]``: ``https://civitai.com/api/download/models/<id>[?query]``, with
  the worker's Civitai token as ``Authorization: Bearer``;
- ``s3://bucket/key``: the presigned URL the orchestrator put in the claim (workers hold no bucket
  credentials);
- ``blob:key`` (a LoRA a training job made, in the deployment's blob store): the signed URL the
  orchestrator put in the claim (on the orchestrator for the local blob store, presigned for S3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from sdfleet.errors import ModelUnavailable, ValidationError

HF_BASE = "https://huggingface.co"
CIVITAI_BASE = "https://civitai.com/api/download/models"
SAFE_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl"})
ONNX_SUFFIX = ".onnx"  # annotators and face detectors: a protobuf graph, no code runs when it loads
KNOWN_SUFFIXES = frozenset({SAFE_SUFFIX, ONNX_SUFFIX, *PICKLE_SUFFIXES})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Fetch:
    """How to get one model: ``path`` (a local file) or ``url`` with ``headers``; ``suffix`` is the
    file suffix the cached copy gets (what tells the engine how to load it); ``guarded`` downloads
    go through the private-address guard (user-supplied URLs), presigned ones do not."""

    suffix: str
    url: str | None = None
    path: Path | None = None
    headers: dict[str, str] = field(default_factory=dict)
    guarded: bool = True

    @property
    def host(self) -> str:
        """The host the download goes to (for logs: never the full URL, which may carry a signature)."""
        return urlsplit(self.url).hostname or "" if self.url else ""


def check_sha256(value: str | None) -> str:
    """A lower-case 64-hex-digit sha256, or :class:`ModelUnavailable` (never a path component otherwise)."""
    sha = (value or "").lower()
    if not _SHA256.match(sha):
        raise ModelUnavailable(f"not a sha256: {value!r}", retryable=False, field="sha256")
    return sha


def check_name(name: str) -> str:
    """Refuse model names that look like paths out of anywhere: ``..`` segments, absolute paths,
    backslashes, drive letters, control characters. (The cache never names files after models;
    this keeps names that are only labels from ever being mistaken for paths.)"""
    if (
        not name
        or len(name) > 200
        or _CONTROL.search(name)
        or "\\" in name
        or name.startswith(("/", "~"))
        or re.match(r"^[A-Za-z]:", name)
        or any(part in ("", ".", "..") for part in name.split("/"))
    ):
        raise ValidationError(f"invalid model name {name!r}", field="name")
    return name


def suffix_of(path: str) -> str | None:
    """The lower-case checkpoint suffix of a path or URL path, if it is one we know."""
    suffix = PurePosixPath(unquote(path)).suffix.lower()
    return suffix if suffix in KNOWN_SUFFIXES else None


def check_suffix(suffix: str, *, allow_pickle: bool, what: str) -> str:
    """``.safetensors`` and ``.onnx`` always; pickle formats only when the operator allowed them (they can run
    code when loaded)."""
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ModelUnavailable(
            f"{what}: pickle checkpoints ({suffix}) can run code when loaded and this worker refuses "
            "them; convert it to .safetensors or start the worker with SDFLEET_WORKER_ALLOW_PICKLE=true",
            retryable=False,
        )
    if suffix not in KNOWN_SUFFIXES:
        raise ModelUnavailable(f"{what}: unsupported model format {suffix!r}", retryable=False)
    return suffix


def hf_url(source: str) -> str:
    """``hf://org/repo[@rev]/path`` → ``https://huggingface.co/org/repo/resolve/<rev>/path``."""
    parts = urlsplit(source)
    segments = [unquote(s) for s in (parts.netloc + parts.path).split("/") if s]
    prefix: list[str] = []
    if segments and segments[0] in ("datasets", "spaces", "models"):
        head = segments.pop(0)
        if head != "models":
            prefix = [head]
    if len(segments) < 3:
        raise ValidationError("hf:// sources look like hf://org/repo[@revision]/path/to/file", field="source")
    org, repo, *path = segments
    revision = "main"
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    if not repo or not revision or any(p in (".", "..") for p in path):
        raise ValidationError(f"bad hf:// source {source!r}", field="source")
    repo_path = "/".join(quote(s, safe="") for s in [*prefix, org, repo])
    file_path = "/".join(quote(s, safe="") for s in path)
    return f"{HF_BASE}/{repo_path}/resolve/{quote(revision, safe='')}/{file_path}"


def civitai_url(source: str) -> str:
    """``civitai://version/<id>[?query]`` → ``https://civitai.com/api/download/models/<id>[?query]``."""
    parts = urlsplit(source)
    version = parts.path.strip("/")
    if parts.netloc != "version" or not version.isdigit():
        raise ValidationError("civitai:// sources look like civitai://version/<id>", field="source")
    return f"{CIVITAI_BASE}/{version}" + (f"?{parts.query}" if parts.query else "")


def plan_fetch(
    source: str,
    *,
    url: str | None = None,
    allow_pickle: bool = False,
    hf_token: str | None = None,
    civitai_token: str | None = None,
) -> Fetch:
    """Map a registry ``source`` to a :class:`Fetch`. ``url`` is the download URL the orchestrator
    gave (``s3://`` sources). Pickle formats are refused unless ``allow_pickle``; a source whose
    format is not visible in its name (Civitai, extension-less URLs) is fetched as ``.safetensors``
    and its header is checked after download."""
    parts = urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme in ("", "file"):
        path = Path(unquote(parts.path) if scheme else source)
        if not path.is_absolute():
            raise ModelUnavailable(f"a local source must be an absolute path: {source!r}", retryable=False)
        # the format is checked where the file is looked at (a local source may be a diffusers folder)
        return Fetch(suffix=path.suffix.lower(), path=path)
    if scheme in ("http", "https"):
        suffix = suffix_of(parts.path) or SAFE_SUFFIX
        return Fetch(suffix=check_suffix(suffix, allow_pickle=allow_pickle, what=source), url=source)
    if scheme == "hf":
        target = hf_url(source)
        suffix = suffix_of(parts.path) or SAFE_SUFFIX
        headers = {"authorization": f"Bearer {hf_token}"} if hf_token else {}
        return Fetch(
            suffix=check_suffix(suffix, allow_pickle=allow_pickle, what=source), url=target, headers=headers
        )
    if scheme == "civitai":
        headers = {"authorization": f"Bearer {civitai_token}"} if civitai_token else {}
        return Fetch(suffix=SAFE_SUFFIX, url=civitai_url(source), headers=headers)
    if scheme == "blob":
        if not url or not urlsplit(url).scheme:
            raise ModelUnavailable(
                f"{source}: the orchestrator gave no download URL for this blob: source", retryable=True
            )
        suffix = suffix_of(source.removeprefix("blob:")) or SAFE_SUFFIX
        return Fetch(
            suffix=check_suffix(suffix, allow_pickle=allow_pickle, what=source), url=url, guarded=False
        )
    if scheme == "s3":
        if not url:
            raise ModelUnavailable(
                f"{source}: the orchestrator gave no download URL for this s3:// source", retryable=True
            )
        suffix = suffix_of(parts.path) or SAFE_SUFFIX
        return Fetch(
            suffix=check_suffix(suffix, allow_pickle=allow_pickle, what=source), url=url, guarded=False
        )
    raise ModelUnavailable(f"unsupported model source scheme {scheme!r}", retryable=False)


def safetensors_header_ok(path: Path) -> bool:
    """Whether ``path`` starts like a safetensors file: an 8-byte little-endian header length that
    fits the file, then a JSON object."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    length = int.from_bytes(head[:8], "little")
    return 2 <= length <= size - 8 and head[8:9] == b"{"


__all__ = [
    "CIVITAI_BASE",
    "HF_BASE",
    "KNOWN_SUFFIXES",
    "PICKLE_SUFFIXES",
    "SAFE_SUFFIX",
    "Fetch",
    "check_name",
    "check_sha256",
    "check_suffix",
    "civitai_url",
    "hf_url",
    "plan_fetch",
    "safetensors_header_ok",
    "suffix_of",
]
