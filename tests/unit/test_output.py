"""cfops.output under GitHub Actions: annotations, log groups, masks; and plain text elsewhere."""

from __future__ import annotations

import os

import pytest

from cfops import output


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    output.clear_secrets()
    monkeypatch.delenv("CFOPS_GITHUB_MASKED", raising=False)


def test_github_actions_gets_annotations_groups_and_masks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    output.add_secrets(["tok-secret-0001"])
    output.mask_secrets()
    output.mask_secrets()  # once per job step: children (and a second call) do not repeat it
    assert os.environ["CFOPS_GITHUB_MASKED"] == "1"
    with output.group("build the spike image"):
        output.echo("step 1 with tok-secret-0001")
    output.warn("base image is old\nsecond line 100%")
    output.error("deploy failed: tok-secret-0001")
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "::add-mask::tok-secret-0001",
        "::group::build the spike image",
        "step 1 with ***",
        "::endgroup::",
    ]
    assert captured.err.splitlines() == [
        "::warning::base image is old%0Asecond line 100%25",
        "::error::deploy failed: ***",
    ]


def test_elsewhere_plain_lines_and_no_workflow_commands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    output.add_secrets(["tok-secret-0002"])
    output.mask_secrets()
    with output.group("step"):
        output.echo("hello")
    output.error("no tok-secret-0002 here")
    captured = capsys.readouterr()
    assert "::" not in captured.out + captured.err
    assert captured.out == "hello\n"
    assert captured.err == "error: no *** here\n"
