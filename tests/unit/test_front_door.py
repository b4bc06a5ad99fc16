"""The front door: `cfops --help`/`--version`, one name per command across cfops, nox and invoke, invoke's
exit 2 on an unknown flag, and secrets kept off argv by the session and task layers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from cfops import __main__ as entry
from cfops import __version__, cli, procs
from cfops.argv import hand_off_secrets
from cfops.commands import ALIASES, BY_NAME, CFOPS_ONLY, COMMANDS

REPO = Path(__file__).resolve().parents[2]
# Sessions/tasks that are not `cfops` commands (the project's own chores and pipelines), documented in the
# README's command table. Everything else in nox -l / invoke --list is a cfops command or an old name.
NOX_ONLY = {"lint", "tests", "perf_fidelity"}
INVOKE_ONLY = {"lint", "tests", "check", "release-proxy"}


def test_help_lists_every_command_with_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    assert entry.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert re.search(rf"^  {re.escape(command.name)} +\S", out, re.MULTILINE), command.name
    assert entry.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cfops {__version__}"


def test_no_command_or_an_unknown_one_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert entry.main([]) == 2
    assert "commands:" in capsys.readouterr().err
    assert entry.main(["deploy-everything"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: cfops: unknown command 'deploy-everything' (see cfops --help)"


@pytest.mark.parametrize("name", [c.name for c in COMMANDS])
def test_every_command_has_help_under_its_cfops_name(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        entry.main([name, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: cfops {name} "), out[:80]


def _nox_sessions() -> dict[str, str]:
    listed = subprocess.run(
        [sys.executable, "-m", "nox", "-f", str(REPO / "noxfile.py"), "-l"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.findall(r"^[*-] (\S+)(?: \[[^\]]*\])?(?: -> (.*))?$", listed, re.MULTILINE)
    return {name: doc for name, doc in found}


def _invoke_tasks() -> set[str]:
    listed = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), "--list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names: set[str] = set()
    for line in listed.splitlines()[1:]:
        match = re.match(r"^  (\S+)(?: \(([^)]*)\))?", line)
        if match:
            names.add(match.group(1))
            names.update(a.strip() for a in (match.group(2) or "").split(","))
    return names - {""}


def test_cfops_nox_and_invoke_use_the_same_names() -> None:
    commands = {c.name for c in COMMANDS} - CFOPS_ONLY
    sessions = _nox_sessions()
    tasks = _invoke_tasks()
    assert commands <= set(sessions), commands - set(sessions)
    assert commands <= tasks, commands - tasks
    # Nothing else: the project's own sessions/tasks, or an old name that says which command it is.
    assert set(sessions) - commands - NOX_ONLY == set(ALIASES)
    assert tasks - commands - INVOKE_ONLY == {"test"}  # invoke's alias of `tests`
    for old, (command, *args) in ALIASES.items():
        assert command in BY_NAME
        expected = f"`{' -- '.join([command, *args]) if args else command}`"
        assert sessions[old] == f"Old name of {expected}.", old


def test_invoke_rejects_an_unknown_flag_with_exit_2_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), "preflight", "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: invoke: No idea what '--bogus' is! (see invoke --help <task>)"
    ]


def test_secret_header_values_leave_argv_for_the_environment() -> None:
    args = ["--requests", "3", "--header", "Authorization: Bearer tok-123456", "--header=X-Api-Key: k-98765"]
    args += ["--header", "X-Name: plain", "--header", "Cookie: @env:ALREADY"]
    shown, env = hand_off_secrets(args)
    assert "tok-123456" not in " ".join(shown) and "k-98765" not in " ".join(shown)
    assert shown == [
        "--requests",
        "3",
        "--header",
        "Authorization: @env:CFOPS_SECRET_ARG_0",
        "--header=X-Api-Key: @env:CFOPS_SECRET_ARG_1",
        "--header",
        "X-Name: plain",
        "--header",
        "Cookie: @env:ALREADY",
    ]
    assert env == {"CFOPS_SECRET_ARG_0": "Bearer tok-123456", "CFOPS_SECRET_ARG_1": "k-98765"}


def test_an_abbreviated_flag_is_bad_input_so_no_secret_slips_past_the_hand_off() -> None:
    # hand_off_secrets knows `--header`; argparse would otherwise take `--head` for it.
    result = subprocess.run(
        [sys.executable, "-m", "cfops", "perf", "--head", "Authorization: Bearer tok-abbrev"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().startswith("error: cfops perf: unrecognized arguments: --head")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["versions", "--window", "nan"],
        ["versions", "--window", "inf"],
        ["promote", "--new", "a", "--percent", "nan"],
        ["analytics", "show", "--new", "a", "--window", "nan"],
        ["analytics", "stage", "--new", "a", "--percent=-inf"],
    ],
)
def test_a_number_that_is_not_finite_is_bad_input(argv: list[str]) -> None:
    # nan passes every `<= 0` check and ends in int(nan): argparse turns it away first.
    result = subprocess.run(
        [sys.executable, "-m", "cfops", *argv], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "expected a finite number" in line and "Traceback" not in result.stdout


def test_the_exit_code_file_is_this_commands_own_not_a_childs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    codes = tmp_path / "codes"
    codes.touch()
    monkeypatch.setenv("CFOPS_EXIT_CODE_FILE", str(codes))
    monkeypatch.setenv("CFOPS_PARENT_PID", "1")
    child = "import os, sys; from cfops import cli; sys.exit(cli.main(lambda argv: 2, []))"

    def pipeline(argv: Sequence[str]) -> int:
        # a release step: a cfops child that exits 2 (a skipped optional step), then this command fails
        result = procs.run([sys.executable, "-c", child], check=False, echo=False)
        assert result.returncode == 2
        return 1

    assert cli.main(pipeline, []) == 1
    assert codes.read_text().split() == ["1"]
    assert "CFOPS_EXIT_CODE_FILE" not in os.environ


def test_ci_runs_the_readmes_quick_start_and_test_command_exactly() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    first, second = quick.strip().splitlines()  # two commands, nothing installed globally
    assert "pip install" in first and first.startswith("python3 -m venv .venv && .venv/bin/")
    assert second == ".venv/bin/invoke release"
    test_command = re.search(r"The test suite \(what CI runs, after the first command\): `([^`]+)`", readme)
    assert test_command is not None
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert first in ci
    assert test_command.group(1) in ci


def test_invoke_perf_hands_a_secret_header_to_nox_by_environment() -> None:
    import shlex

    import tasks
    from invoke.context import MockContext
    from invoke.runners import Result

    calls: list[tuple[str, dict[str, str]]] = []

    class Recording(MockContext):
        def run(self, command: str, **kwargs: object) -> Result:
            env = kwargs["env"]
            assert isinstance(env, dict)
            calls.append((command, env))
            return Result(command=command, exited=0)

    tasks.perf(Recording(), requests=3, header=["Authorization: Bearer tok-998877"], json="-")
    ((command, env),) = calls
    argv = shlex.split(command)
    assert argv[argv.index("-s") + 1 :] == [
        "perf",
        "--",
        "--requests",
        "3",
        "--header",
        "Authorization: @env:CFOPS_SECRET_ARG_0",
        "--json",
        "-",
    ]
    assert "tok-998877" not in command
    assert env["CFOPS_SECRET_ARG_0"] == "Bearer tok-998877"
    assert "CFOPS_EXIT_CODE_FILE" in env
