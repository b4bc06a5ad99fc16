"""cfops.proxy's input handling, and the allowlist file both the Worker and preflight read."""

from __future__ import annotations

import json

import pytest

from cfops.errors import UsageError
from cfops.proxy import check_origin, parse_vars
from tests.conftest import REPO


def test_vars_use_wranglers_name_colon_value_syntax() -> None:
    assert parse_vars(["BACKEND_REQUEST_TIMEOUT_MS:5000", "BACKEND_RETRY_ATTEMPTS:0", "X:a:b"]) == {
        "BACKEND_REQUEST_TIMEOUT_MS": "5000",
        "BACKEND_RETRY_ATTEMPTS": "0",
        "X": "a:b",
    }
    assert parse_vars(["EMPTY:"]) == {"EMPTY": ""}


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("NOCOLON", "expected NAME:VALUE"),
        (":x", "expected NAME:VALUE"),
        ("BACKEND_ORIGIN:http://x", "--origin"),
    ],
)
def test_bad_vars_are_usage_errors(pair: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_vars([pair])


def test_origin_must_be_http_or_https() -> None:
    assert check_origin("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert check_origin("https://origin.example.com") == "https://origin.example.com"
    for bad in ("ftp://127.0.0.1", "127.0.0.1:8000", "http://", ""):
        with pytest.raises(UsageError, match="not an http"):
            check_origin(bad)


def test_allowlist_is_canonical() -> None:
    """Prefixes end in "/" (so /api never matches /apix) and every entry is a canonical path."""
    allowlist = json.loads((REPO / "backend-cloudflare/src/allowlist.json").read_text())
    assert {"exact", "prefixes", "methods", "not_exposed"} <= set(allowlist)
    assert allowlist["exact"] and allowlist["prefixes"]
    for path in allowlist["exact"] + allowlist["prefixes"]:
        assert path.startswith("/") and "//" not in path and "%" not in path and "\\" not in path, path
        assert not {".", ".."} & set(path.split("/")), path
    assert all(prefix.endswith("/") for prefix in allowlist["prefixes"])
    assert set(allowlist["methods"]) <= {"GET", "HEAD", "POST", "OPTIONS", "PUT", "PATCH", "DELETE"}
    assert all(m == m.upper() for m in allowlist["methods"])
