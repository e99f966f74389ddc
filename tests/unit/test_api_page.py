"""`GET /` and its static files through the app (fake engine): served without a key, every file the page refers
to exists in the package, and nothing is loaded from another host."""

from __future__ import annotations

import re

import pytest

from app.api.page import STATIC_DIR
from tests.unit.test_api_http import make_client

# The SVG namespace is an identifier that is never fetched.
NOT_FETCHED = {"http://www.w3.org/2000/svg"}
LOCAL_REFERENCE = re.compile(r"""(?:src|href)="(/[^"]*)"|from "\./([^"]+)"|addModule\("(/[^"]+)"\)""")


@pytest.fixture(scope="module")
def client():
    client, _ = make_client(api_keys=["secret-key"])
    with client:
        yield client


def references(text: str) -> set[str]:
    """Paths a page or module loads: src/href attributes, module imports (relative to /static/), worklets."""
    return {absolute or module or f"/static/{relative}"
            for absolute, relative, module in LOCAL_REFERENCE.findall(text)}


def test_page_is_served_without_a_key_and_forbids_other_hosts(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert client.head("/").status_code == 200
    assert client.post("/v1/audio/transcriptions").status_code == 401  # the API itself still needs the key


def test_every_file_the_page_refers_to_is_served(client):
    pending, seen = ["/"], set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        response = client.get(path)
        assert response.status_code == 200, path
        pending += sorted(references(response.text) - seen)
    served = {p.removeprefix("/static/") for p in seen if p.startswith("/static/")}
    # Every shipped file is used (index.html as `/`), none is missing.
    assert served | {"index.html"} == {p.name for p in STATIC_DIR.iterdir()}


def test_no_static_file_names_another_host():
    for path in STATIC_DIR.iterdir():
        hosts = set(re.findall(r"(?:https?|wss?):/" + r"/[^\s\"'`)]+", path.read_text())) - NOT_FETCHED
        assert not hosts, f"{path.name} refers to {sorted(hosts)}"
