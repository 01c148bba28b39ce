"""The web page's HTTP side: where it lives, how its files are cached, that every module it imports
is served, and the per-minute activity ``GET /v1/admin/stats`` adds for its fleet charts."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from sdfleet.api.routes.ui import STATIC_DIR, asset_version
from tests.integration.api.conftest import run_one_job_as_worker

IMPORT = re.compile(r"""(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+"([^"]+)"|import\("([^"]+)"\)""")


def test_root_and_ui_redirect_to_the_page(client: TestClient) -> None:
    for path in ("/", "/ui"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 307
        assert r.headers["location"] == "ui/"
    assert client.get("/").url.path == "/ui/"


def test_the_page_is_revalidated_and_its_assets_are_immutable(client: TestClient) -> None:
    r = client.get("/ui/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    version = asset_version()
    assert f'src="assets/{version}/js/main.js"' in r.text
    assert "{{assets}}" not in r.text
    assert client.get("/ui/", headers={"if-none-match": r.headers["etag"]}).status_code == 304

    js = client.get(f"/ui/assets/{version}/js/main.js", headers={"accept-encoding": "gzip"})
    assert js.status_code == 200
    assert js.headers["content-type"].startswith("text/javascript")
    assert js.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert js.headers["content-encoding"] == "gzip"  # decoded by the client
    assert js.content == (STATIC_DIR / "js" / "main.js").read_bytes()

    stale = client.get("/ui/assets/000000000000/app.css")
    assert stale.status_code == 200
    assert stale.headers["cache-control"] == "no-cache"
    again = client.get(f"/ui/assets/{version}/app.css", headers={"if-none-match": stale.headers["etag"]})
    assert again.status_code == 304


def test_only_files_under_the_static_folder_are_served(client: TestClient) -> None:
    version = asset_version()
    for path in ("nope.js", "..%2F..%2Fapi%2Fapp.py", "%2e%2e/%2e%2e/config.py", "js"):
        r = client.get(f"/ui/assets/{version}/{path}")
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "not_found"


def test_every_module_the_page_imports_is_served(client: TestClient) -> None:
    """No build step means no bundler to catch a broken import: follow them all from index.html."""
    html = client.get("/ui/").text
    base = f"/ui/assets/{asset_version()}/"
    pending = [m for m in re.findall(r'(?:src|href)="assets/[0-9a-f]+/([^"]+)"', html)]
    seen: set[str] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        r = client.get(base + path)
        assert r.status_code == 200, path
        if path.endswith(".js"):
            folder = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
            for a, b in IMPORT.findall(r.text):
                target = (a or b).removeprefix("./")
                parts = (folder + target).split("/")
                resolved: list[str] = []
                for part in parts:
                    if part == "..":
                        resolved.pop()
                    elif part != ".":
                        resolved.append(part)
                pending.append("/".join(resolved))
    assert {"js/main.js", "js/tabs/generate.js", "js/watch.js", "app.css"} <= seen
    assert len([p for p in seen if p.endswith(".js")]) >= 20


def test_stats_report_the_last_hour_minute_by_minute(client: TestClient) -> None:
    client.post("/v1/jobs", json={"params": {"prompt": "a", "width": 64, "height": 64, "batch_size": 2}})
    run_one_job_as_worker(client)
    stats = client.get("/v1/admin/stats").json()
    hour = stats["last_hour"]
    assert hour["minute_seconds"] == 60
    assert len(hour["minutes"]) == 60
    assert [m["t"] - hour["start"] for m in hour["minutes"][:2]] == [0, 60]
    assert hour["minutes"][-1]["succeeded"] == 1  # the current minute
    assert hour["totals"]["images"] == 2
    assert hour["totals"]["engine_seconds"] == 1.5
    assert hour["totals"]["images_per_dollar"] is None  # the worker charges nothing
