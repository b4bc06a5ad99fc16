"""The release pipeline engine (steps, failure policy, report) and the invoke tasks over it."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tasks
from invoke.context import MockContext
from invoke.exceptions import Exit
from invoke.runners import Result

from cfops import cli, release
from cfops.config import Settings, load_settings
from cfops.errors import UsageError
from cfops.records import PerfRecord
from cfops.release import Context, Options, Skip, Step, StepResult, runner


def nox_command(*args: str) -> str:
    return shlex.join(
        [sys.executable, "-m", "nox", "-f", str(Path(tasks.__file__).parent / "noxfile.py"), *args]
    )


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda c: tasks.release(c), ["-s", "release", "--", "local"]),
        (
            lambda c: tasks.release(c, target="production", dry_run=True, allow_dirty=True, stages="10,100"),
            ["-s", "release", "--", "production", "--dry-run", "--allow-dirty", "--stages", "10,100"],
        ),
        (
            lambda c: tasks.release(c, skip_tests=True, base_url="https://w.example.workers.dev"),
            ["-s", "release", "--", "local", "--skip-tests", "--base-url", "https://w.example.workers.dev"],
        ),
        (
            lambda c: tasks.release_proxy(c, origin="https://origin.example.com", dry_run=True),
            ["-s", "release", "--", "proxy", "--origin", "https://origin.example.com", "--dry-run"],
        ),
        (
            lambda c: tasks.rollback(c, version="v-1"),
            ["-s", "rollback", "--", "--worker", "native", "--version", "v-1"],
        ),
        (lambda c: tasks.status(c), ["-s", "status"]),
        (lambda c: tasks.check(c), ["-s", "lint", "tests", "preflight"]),
    ],
)
def test_tasks_run_exactly_these_nox_commands(call: object, expected: list[str]) -> None:
    command = nox_command(*expected)
    context = MockContext(run={command: Result(exited=0)})  # any other command raises
    call(context)  # type: ignore[operator]
    assert context.run.call_count == 1  # type: ignore[attr-defined]


class ExitingContext(MockContext):
    """nox as it behaves: exit 1 for the failed session, the command's own code left in the file."""

    def __init__(self, recorded: str) -> None:
        super().__init__()
        self.recorded = recorded

    def run(self, command: str, **kwargs: Any) -> Result:
        if self.recorded:
            Path(kwargs["env"]["CFOPS_EXIT_CODE_FILE"]).write_text(self.recorded)
        return Result(command=command, exited=1)


@pytest.mark.parametrize(("recorded", "code"), [("2\n", 2), ("", 1)])
def test_a_failing_session_exits_the_task_with_the_commands_own_code(recorded: str, code: int) -> None:
    with pytest.raises(Exit) as info:
        tasks.release(ExitingContext(recorded), target="bogus")
    assert info.value.code == code


def test_the_collection_exposes_the_pipeline_tasks() -> None:
    names = set(tasks.ns.task_names)
    assert {"release", "release-proxy", "rollback", "status", "check"} <= names


# ------------------------------------------------------------------------------------ the engine


@pytest.fixture
def settings(project: Path) -> Settings:
    return load_settings(project, {})


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def run_steps(
    settings: Settings, steps: list[Step], *, dry_run: bool = False, rollback_to: str | None = None
) -> tuple[Context, list[StepResult]]:
    ctx = Context(settings=settings, options=Options(pipeline="local", dry_run=dry_run))
    ctx.rollback_to = rollback_to
    results: list[StepResult] = []
    release.execute(ctx, steps, results)
    return ctx, results


def test_steps_run_in_order_and_stop_at_the_first_failure(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = settings.root / "ran"
    steps = [
        Step("first", lambda ctx: py("print('one')")),
        Step("skipped one", lambda ctx: py("raise SystemExit(3)"), skip=lambda ctx: Skip("not needed")),
        Step(
            "breaks",
            lambda ctx: py("import sys; print('error: the thing broke', file=sys.stderr); sys.exit(1)"),
        ),
        Step("never", lambda ctx: py(f"open({str(marker)!r}, 'w')")),
    ]
    _, results = run_steps(settings, steps)
    assert [(r.name, r.status) for r in results] == [
        ("first", "ok"),
        ("skipped one", "skipped"),
        ("breaks", "failed"),
        ("never", "not run"),
    ]
    assert results[0].detail == "one"
    assert results[2].detail == "error: the thing broke"
    assert not marker.exists()
    out = capsys.readouterr().out
    assert "✓ first" in out and "✗ breaks" in out and "– skipped one" in out


def test_a_failure_after_the_upload_rolls_back(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = settings.root / "rolled-back"
    monkeypatch.setattr(
        runner, "rollback_command", lambda ctx, failed: py(f"open({str(marker)!r}, 'w').write({failed!r})")
    )
    ctx, results = run_steps(
        settings, [Step("canary", lambda ctx: py("raise SystemExit(1)"))], rollback_to="v-old"
    )
    assert [(r.name, r.status) for r in results] == [("canary", "failed"), ("rollback", "ok")]
    assert marker.read_text() == "canary"
    assert ctx.state.rolled_back_to == "v-old"


@pytest.mark.parametrize(
    ("live", "rolled_back"),
    [
        ({"v-new": 10.0, "v-old": 90.0}, True),  # the split this release set
        ({"v-new": 50.0, "v-old": 50.0}, True),  # the split it was asking for when it failed
        ({"v-other": 0.0, "v-old": 100.0}, False),  # another release's split: not this one's to undo
    ],
)
def test_the_rollback_acts_only_on_a_deployment_the_release_set(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, live: dict[str, float], rolled_back: bool
) -> None:
    import cfops.deploy
    from cfops.cloudflare_api import Deployment

    monkeypatch.setattr(runner, "rollback_command", lambda ctx, failed: py("print('rolled back')"))
    monkeypatch.setattr(cfops.deploy, "current_deployment", lambda s, w: Deployment("d", "", live))
    ctx = Context(settings=settings, options=Options(pipeline="production"))
    ctx.rollback_to = "v-old"
    ctx.state.traffic, ctx.state.asked = {"v-new": 10.0, "v-old": 90.0}, {"v-new": 50.0, "v-old": 50.0}
    results: list[StepResult] = []
    release.execute(ctx, [Step("analysis", lambda ctx: py("raise SystemExit(1)"))], results)
    assert results[-1].status == ("ok" if rolled_back else "skipped")
    assert ctx.state.rolled_back_to == ("v-old" if rolled_back else None)
    if not rolled_back:
        assert ctx.state.foreign == live
        assert "not rolled back: foreign deployment" in results[-1].detail
        assert "someone else deployed version v-other" in results[-1].detail


def test_a_failed_rollback_is_reported_loudly(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "rollback_command", lambda ctx, failed: py("raise SystemExit(1)"))
    _, results = run_steps(
        settings, [Step("canary", lambda ctx: py("raise SystemExit(1)"))], rollback_to="v-old"
    )
    assert results[-1].status == "failed"
    assert "ROLLBACK FAILED" in results[-1].detail


def test_without_an_upload_there_is_no_rollback(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "rollback_command", lambda ctx, failed: pytest.fail("must not roll back"))
    _, results = run_steps(settings, [Step("secrets", lambda ctx: py("raise SystemExit(1)"))])
    assert [r.status for r in results] == ["failed"]


def test_dry_run_plans_instead_of_running(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    marker = settings.root / "ran"
    steps = [
        Step(
            "deploy",
            lambda ctx: py(f"open({str(marker)!r}, 'w')"),
            dry_command=lambda ctx: py("print('bundled')"),
        ),
        Step("promote", lambda ctx: ["python", "-m", "cfops.promote", "--new", release.NEW]),
    ]
    _, results = run_steps(settings, steps, dry_run=True)
    assert [r.status for r in results] == ["ok", "planned"]
    assert not marker.exists()
    assert "· promote: python -m cfops.promote --new NEW_VERSION_ID" in capsys.readouterr().out


def test_the_report_is_json_markdown_and_step_summary(settings: Settings, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier\n")
    settings = Settings(**{**settings.__dict__, "env": {"GITHUB_STEP_SUMMARY": str(summary)}})
    ctx, results = run_steps(
        settings,
        [Step("a", lambda ctx: py("print('fine')")), Step("b", lambda ctx: py("raise SystemExit(1)"))],
    )
    ctx.perf["canary"] = PerfRecord(
        p50_ms=1, p95_ms=2, p99_ms=3, error_rate=0.0, passed=True, requests=20, answers_by_version={"v1": 20}
    )
    data = release.summarize(ctx, results, "2026-11-28T00:00:00+00:00", 1.5)
    release.write_report(settings, data)
    written = json.loads((settings.artifacts_dir / "release.json").read_text())
    assert written["result"] == "failed" and written["stopped_at"] == "b"
    assert [s["status"] for s in written["steps"]] == ["ok", "failed"]
    markdown = (settings.artifacts_dir / "release.md").read_text()
    assert "| ✓ | a |" in markdown and "| ✗ | b |" in markdown
    assert "| canary | 1 | 2 | 3 | 0.0 | True | `v1` 20 |" in markdown
    assert summary.read_text().startswith("earlier\n## Release `local`: failed")


@pytest.mark.parametrize(
    ("options", "environ", "message"),
    [
        (Options(pipeline="production"), {}, "the canary needs the native Worker's URL"),
        (
            Options(pipeline="production", base_url="https://w.example.dev", stages=(50, 10, 100)),
            {},
            "must rise to 100",
        ),
        (
            Options(pipeline="production", base_url="https://w.example.dev", stages=(10, 50)),
            {},
            "must rise to 100",
        ),
        (Options(pipeline="production", base_url="https://w.example.dev"), {}, "CLOUDFLARE_API_TOKEN"),
        (Options(pipeline="proxy", origin="http://origin.example.com"), {}, "https"),
    ],
)
def test_bad_input_is_refused_before_any_step(
    project: Path, options: Options, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        release.prepare(load_settings(project, environ), options)


def test_bad_flags_are_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(release.main, ["staging"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid choice: 'staging'" in err


def test_the_repository_workflows_are_pinned_least_privileged_and_call_what_exists(tmp_path: Path) -> None:
    import re
    import subprocess

    import yaml

    from tests.conftest import REPO, clean_env

    workflows = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    assert {w.name for w in workflows} == {
        "ci.yml",
        "cloudflare-backend-native-deploy.yml",
        "cloudflare-backend-proxy-deploy.yml",
    }
    for path in workflows:
        data = yaml.safe_load(path.read_text())
        assert data["permissions"] == {"contents": "read"}, path.name
        assert data["concurrency"]["group"], path.name
        for job in data["jobs"].values():
            for step in job["steps"]:
                if "uses" in step:
                    assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
    native = (REPO / ".github/workflows/cloudflare-backend-native-deploy.yml").read_text()
    assert "python -m invoke release --target production" in native
    # the preflight check of workflows passes on them
    proc = subprocess.run(
        [sys.executable, "-m", "cfops.preflight", "--only", "workflows"],
        cwd=REPO,
        env=clean_env(CFOPS_ARTIFACTS_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    finding = json.loads((tmp_path / "preflight.json").read_text())["findings"][0]
    assert finding["id"] == "workflows" and finding["status"] == "pass"


def test_an_optional_step_skips_on_a_missing_prerequisite_but_fails_on_a_real_failure(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = "import sys; print('error: no base image here', file=sys.stderr); sys.exit(2)"
    _, results = run_steps(
        settings,
        [Step("image", lambda ctx: py(missing), optional=True), Step("next", lambda ctx: py("print('on')"))],
    )
    assert [(r.name, r.status) for r in results] == [("image", "skipped"), ("next", "ok")]
    assert "image skipped: error: no base image here" in capsys.readouterr().err
    broken = "import sys; print('error: RUN step 3 failed', file=sys.stderr); sys.exit(1)"
    _, results = run_steps(
        settings,
        [Step("image", lambda ctx: py(broken), optional=True), Step("next", lambda ctx: py("print('on')"))],
    )
    assert [(r.name, r.status) for r in results] == [("image", "failed"), ("next", "not run")]


# ------------------------------------------------------------------- cfops steps, in this process


def with_step_timeout(settings: Settings, seconds: float) -> Settings:
    return dataclasses.replace(settings, release=dataclasses.replace(settings.release, step_timeout=seconds))


@pytest.fixture
def own_alarm() -> Iterator[Callable[..., Any] | int | None]:
    """SIGALRM to this test alone: pytest-timeout's alarm (if any) is disarmed here and put back, with its
    handler, afterwards. Yields the handler found."""
    handler = signal.getsignal(signal.SIGALRM)
    runner_alarm = signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, *runner_alarm)


def test_a_cfops_step_runs_in_this_process_with_a_childs_directory_and_environment(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_call(module: str, args: list[str]) -> int:
        seen.update(module=module, args=args, cwd=Path.cwd(), env=dict(os.environ))
        print("first line")
        print("the last line", file=sys.stderr)
        return 0

    monkeypatch.setattr(cli, "call", fake_call)
    monkeypatch.setattr(runner.procs, "run", lambda *a, **k: pytest.fail("no child for a cfops step"))
    monkeypatch.delenv("CFOPS_ARTIFACTS_DIR", raising=False)
    before = dict(os.environ)
    _, results = run_steps(settings, [Step("sync", lambda ctx: release.cfops("sync", "--check"))])
    assert results[0].status == "ok" and results[0].detail == "the last line"
    assert seen["module"] == "cfops.sync" and seen["args"] == ["--check"]
    assert seen["cwd"] == settings.root and seen["env"]["CFOPS_ARTIFACTS_DIR"] == str(settings.artifacts_dir)
    assert dict(os.environ) == before and Path.cwd() != settings.root


def test_a_failing_cfops_step_reports_its_error_line_and_an_optional_one_skips_on_exit_2(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID"):
        monkeypatch.delenv(name, raising=False)
    versions = Step("versions", lambda ctx: release.cfops("versions"))
    _, results = run_steps(settings, [versions])
    assert results[0].status == "failed"
    assert results[0].detail.startswith("error: CLOUDFLARE_API_TOKEN") and "not set" in results[0].detail
    optional = Step("versions", lambda ctx: release.cfops("versions"), optional=True)
    _, results = run_steps(settings, [optional, Step("next", lambda ctx: py("print('ran')"))])
    assert [r.status for r in results] == ["skipped", "ok"]


def test_a_cfops_step_over_its_time_limit_fails_and_the_alarm_is_put_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, own_alarm: Any
) -> None:
    monkeypatch.setattr(cli, "call", lambda module, args: time.sleep(30) or 0)
    quick = with_step_timeout(settings, 0.3)
    started = time.monotonic()
    _, results = run_steps(quick, [Step("perf", lambda ctx: release.cfops("perf"))])
    assert time.monotonic() - started < 10
    assert results[0].status == "failed" and results[0].detail == "perf timed out after 0.3 s"
    assert signal.getsignal(signal.SIGALRM) is own_alarm
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    # An alarm set outside (a test runner's timeout) survives a step's limit with what remains of it.
    fired: list[int] = []
    signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    signal.setitimer(signal.ITIMER_REAL, 60)
    monkeypatch.setattr(cli, "call", lambda module, args: 0)
    run_steps(quick, [Step("perf", lambda ctx: release.cfops("perf"))])
    assert 50 < signal.getitimer(signal.ITIMER_REAL)[0] <= 60 and not fired


def test_a_cfops_step_that_sends_json_to_stdout_gives_the_text_back_to_the_next(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cfops import output

    def json_step(module: str, args: list[str]) -> int:
        output.json_to_stdout()
        output.echo("text goes to stderr now")
        return 0

    monkeypatch.setattr(cli, "call", json_step)
    run_steps(settings, [Step("perf", lambda ctx: release.cfops("perf", "--json", "-"))])
    assert output.console() is not None and not output.console().stderr
    assert "text goes to stderr now" in capsys.readouterr().err


def test_cli_call_runs_a_command_as_its_process_would_exit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import cfops.promote

    assert cli.call("cfops.deploy", ["--help"]) == 0  # a package: its __main__'s command
    assert "cfops deploy" in capsys.readouterr().out
    assert cli.call("cfops.promote", ["--percent", "nan"]) == 2
    assert "expected a finite number" in capsys.readouterr().err

    def broken(argv: list[str]) -> int:
        raise RuntimeError("a bug, not an error of the input")

    monkeypatch.setattr(cfops.promote, "main", broken)
    assert cli.call("cfops.promote", []) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err


def test_an_outer_alarm_due_first_runs_its_own_handler_and_the_step_goes_on(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, own_alarm: Any
) -> None:
    fired: list[float] = []
    signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(time.monotonic()))
    signal.setitimer(signal.ITIMER_REAL, 0.2)  # a test runner's timeout, due before the step's limit
    monkeypatch.setattr(cli, "call", lambda module, args: time.sleep(0.6) or 0)
    _, results = run_steps(with_step_timeout(settings, 30), [Step("perf", lambda ctx: release.cfops("perf"))])
    assert results[0].status == "ok"
    assert len(fired) == 1
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # delivered: not armed again


def test_a_perf_step_over_its_time_limit_is_stopped_inside_its_event_loop(settings: Settings) -> None:
    """The perf engine runs an event loop (uvloop), where an exception raised by a signal handler would be
    swallowed: the step's alarm must still stop it."""
    with socket.socket() as blackhole:  # accepts connections (the backlog), never answers
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(100)
        url = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
        quick = with_step_timeout(settings, 1.5)
        started = time.monotonic()
        argv = [
            "--base-url",
            url,
            "--requests",
            "20",
            "--concurrency",
            "2",
            "--json",
            str(settings.root / "p.json"),
        ]
        _, results = run_steps(quick, [Step("perf smoke", lambda ctx: release.cfops("perf", *argv))])
        took = time.monotonic() - started
    assert results[0].status == "failed" and results[0].detail == "perf smoke timed out after 1.5 s"
    assert took < 10, took  # each request alone would wait 10 s for its answer


def test_a_cfops_steps_lines_are_judged_without_colour_codes_or_a_services_log(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cfops import output

    def coloured(module: str, args: list[str]) -> int:
        print("\x1b[1;31merror: the canary failed its p95\x1b[0m", file=sys.stderr)
        print("\x1b[?25h\r\x1b[1A\x1b[2K\x1b[32mcleanup done\x1b[0m")
        # A running service's log arrives meanwhile (procs.Service forwards it from its own thread).
        chatter = threading.Thread(
            target=lambda: print("[local stack] error: GET /healthz 200"),
            name=f"{output.SERVICE_THREAD}stack",
        )
        chatter.start()
        chatter.join()
        return 1

    monkeypatch.setattr(cli, "call", coloured)
    _, results = run_steps(settings, [Step("canary", lambda ctx: release.cfops("perf"))])
    assert results[0].status == "failed" and results[0].detail == "error: the canary failed its p95"


def test_a_bug_in_a_step_fails_it_and_rolls_back_instead_of_crashing_the_release(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = settings.root / "rolled-back"
    monkeypatch.setattr(
        runner, "rollback_command", lambda ctx, failed: py(f"open({str(marker)!r}, 'w').write({failed!r})")
    )

    def broken(ctx: Context) -> None:
        raise KeyError("new_version")

    steps = [
        Step("promote", lambda ctx: release.cfops("promote"), before=broken),
        Step("never", lambda c: py("")),
    ]
    _, results = run_steps(settings, steps, rollback_to="v-old")
    assert [(r.name, r.status) for r in results] == [
        ("promote", "failed"),
        ("never", "not run"),
        ("rollback", "ok"),
    ]
    assert results[0].detail == "KeyError: 'new_version'"
    assert marker.read_text() == "promote"
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "nan", "1e12"])
def test_a_step_timeout_the_alarm_cannot_hold_is_bad_input(project: Path, value: str) -> None:
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + f"\n[tool.cfops.release]\nstep_timeout = {value}\n")
    with pytest.raises(UsageError, match="step_timeout"):
        load_settings(project, {})
