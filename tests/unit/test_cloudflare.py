"""cfops.cloudflare: the one parser of wrangler's error lines, token names and advice."""

from __future__ import annotations

import pytest

from cfops import cloudflare

# What wrangler 4 prints when esbuild cannot resolve the entry point (colours on, into a pipe).
BUILD_FAILURE = """
\x1b[31m✘ \x1b[41;31m[\x1b[41;97mERROR\x1b[41;31m]\x1b[0m \x1b[1mCould not resolve "src/missing.ts"\x1b[0m

    src/index.ts:3:19:
      3 │ import { x } from "./missing";

\x1b[31m✘ [ERROR]\x1b[0m Build failed with 1 error:

🪵  Logs were written to "/tmp/wrangler-2026.log"
"""


def test_error_lines_are_the_error_messages_with_their_location() -> None:
    assert cloudflare.error_lines(BUILD_FAILURE) == [
        'Could not resolve "src/missing.ts" (at src/index.ts:3:19)',
        "Build failed with 1 error:",
    ]


def test_error_summary_prefers_the_first_error_then_the_last_informative_line() -> None:
    text = "\x1b[31m✘ [ERROR]\x1b[0m A request to the Cloudflare API failed.\nLogs were written to /tmp/x\n"
    assert cloudflare.error_summary(text, fallback="-") == "A request to the Cloudflare API failed."
    assert cloudflare.error_summary("one\ntwo\nLogs were written to /tmp/x\n", fallback="-") == "two"
    assert cloudflare.error_summary("\n  \n", fallback="exit code 1, no output") == "exit code 1, no output"


def test_informative_lines_drop_colour_blank_lines_and_boilerplate() -> None:
    text = "\x1b[33mwarn\x1b[0m\n\nIf you think this is a bug then please create an issue\nkept\n"
    assert cloudflare.informative_lines(text) == ["warn", "kept"]


@pytest.mark.parametrize(
    ("values", "token", "conflict"),
    [
        ({}, None, False),
        ({"API_BEARER_TOKEN": "b"}, "b", False),
        ({"IMMCAD_API_BEARER_TOKEN": "a", "API_BEARER_TOKEN": "a"}, "a", False),
        ({"IMMCAD_API_BEARER_TOKEN": "a", "API_BEARER_TOKEN": "b"}, "a", True),
        ({"IMMCAD_API_BEARER_TOKEN": "a", "API_BEARER_TOKEN": "  "}, "a", False),
    ],
)
def test_bearer_token_names(values: dict[str, str], token: str | None, conflict: bool) -> None:
    assert cloudflare.bearer_token(values) == token
    assert cloudflare.bearer_conflict(values) is conflict


def test_the_bearer_token_names_match_the_app() -> None:
    """immcad_api keeps its own copy (it must not import cfops): the two must name the same variables."""
    from immcad_api import settings as app_settings

    source = app_settings.__file__
    with open(source, encoding="utf-8") as handle:
        text = handle.read()
    for name in cloudflare.BEARER_TOKEN_NAMES:
        assert f'"{name}"' in text


def test_every_code_with_advice_is_one_a_command_can_meet() -> None:
    codes = {cloudflare.NOT_FOUND_CODE, cloudflare.STARTUP_CODE, cloudflare.SIZE_CODE}
    codes |= cloudflare.SECRET_NOT_DEPLOYED_CODES | cloudflare.AUTH_CODES
    assert all(cloudflare.advice_for(code) for code in codes)
    assert cloudflare.advice_for(99999) is None and cloudflare.advice_for(None) is None
