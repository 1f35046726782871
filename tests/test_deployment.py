"""The front door: Dockerfile, docker-compose.yml, .env.example, ./run and README agree with the repository.

No Docker engine is needed: compose files are validated with `docker-compose config` where that command
exists, and every path and `semhash` command the deployment files name is checked against the tree and
the CLI.
"""

from __future__ import annotations

import inspect
import itertools
import os
import re
import shlex
import shutil
import subprocess
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from dockerfile_parse import dockerfile_stages
from fastapi.testclient import TestClient
from typer.models import ParameterInfo
from typer.testing import CliRunner

from semhash_cli import app

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
RUN_SCRIPT = ROOT / "run"


def _compose_command() -> list[str] | None:
    """`docker-compose` (v1, Debian's package) or the `docker compose` plugin, whichever works here."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def _compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    command = _compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed here")
    # Values from the caller's shell would mask what the env file does (or does not) provide.
    env = {k: v for k, v in os.environ.items() if not re.fullmatch(r"POSTGRES_\w+|SEMHASH_\w+|API_\w+", k)}
    return subprocess.run(
        [*command, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _dockerfile_cmd() -> list[str]:
    runtime = dockerfile_stages()[-1][1]
    cmd = [args for instruction, args in runtime if instruction == "CMD"][-1]
    return yaml.safe_load(cmd)  # exec form is a JSON array, which YAML reads


def _check_semhash_command(argv: list[str]) -> None:
    """`semhash WORD... --opt ...`: the sub-command path exists and knows every option given.

    The path is the bare words before the first option; its `--help` must succeed and list each option.
    """
    assert argv[0] == "semhash", argv
    path = list(itertools.takewhile(lambda word: re.fullmatch(r"[a-z][\w-]*", word), argv[1:]))
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, f"`semhash {' '.join(path)}` is not a command:\n{result.output}"
    for option in (word.split("=")[0] for word in argv if word.startswith("--")):
        assert re.search(rf"(?<![\w-]){option}(?![\w-])", result.output), (
            f"`{shlex.join(argv)}`: `semhash {' '.join(path)}` has no option {option}"
        )


def test_compose_file_is_valid_with_the_example_env():
    result = _compose_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_run_without_the_secrets(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = _compose_config(empty)
    assert result.returncode != 0
    assert "in .env" in result.stderr, result.stderr


def test_env_example_sets_every_variable_compose_reads():
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    provided = set(re.findall(r"^(\w+)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))
    assert used <= provided, f".env.example lacks {sorted(used - provided)}"


def test_compose_builds_from_this_repository():
    stages = {name for name, _ in dockerfile_stages()}
    override = yaml.safe_load((ROOT / "docker-compose.debian.yml").read_text())
    for name, service in [*_compose()["services"].items(), *override["services"].items()]:
        build = service.get("build")
        if build is not None:
            context = ROOT / build["context"]
            assert context.is_dir(), f"{name}: build context {context} missing"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: Dockerfile missing"
            if "target" in build:
                assert build["target"] in stages, f"{name}: the Dockerfile has no stage {build['target']}"
    services = _compose()["services"]
    # torch only where training happens.
    assert {services[s]["build"]["target"] for s in ("api", "migrate", "indexer")} == {"serving"}
    assert services["train"]["build"]["target"] == "training"


def test_compose_service_order_and_health_checks():
    services = _compose()["services"]
    assert "pg_isready" in str(services["postgres"]["healthcheck"]["test"])
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "healthcheck" in services["api"] and "ports" not in services["api"], "replicas: behind proxy"
    assert services["proxy"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert services["proxy"]["ports"] and "api:8000" in (ROOT / "deploy/nginx/nginx.conf").read_text()
    assert services["indexer"]["profiles"] == ["index"]
    assert services["train"]["profiles"] == ["train"]


def test_every_command_line_in_the_deployment_files_is_a_semhash_command():
    """Dockerfile CMD and each compose service's entrypoint + command are valid `semhash` invocations."""
    command_lines = [_dockerfile_cmd()]
    for service in _compose()["services"].values():
        if service.get("build", {}).get("context") != ".":
            continue  # not a semhash image (postgres, the proxy)
        entrypoint = service.get("entrypoint", [])
        command = service.get("command", [] if entrypoint else _dockerfile_cmd())
        command_lines.append([*entrypoint, *command])
    for argv in command_lines:
        _check_semhash_command(argv)


def _command_lines_in_run_script_and_readme() -> list[list[str]]:
    """`semhash ...` invocations in ./run and the README's code blocks, each cut at a variable or operator."""
    rest = r"([^\n#;&|$\"']*)"
    run_text = RUN_SCRIPT.read_text()
    # train_quick KIND ARGS... runs `semhash train KIND --profile quick --out DIR ARGS...`.
    run_text = re.sub(r"\btrain_quick (\w+)", r'"$semhash" train \1 --profile quick --out DIR', run_text)
    found = re.findall(r'"\$semhash"[ \t]' + rest, run_text)
    for block in re.findall(r"```\w*\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL):
        found += re.findall(r"(?:^|[\s(])semhash[ \t]" + rest, block, flags=re.MULTILINE)
    return [["semhash", *words.split()] for words in found]


def test_every_semhash_command_in_run_script_and_readme_exists():
    command_lines = _command_lines_in_run_script_and_readme()
    # ./run migrates, indexes, serves and trains: if one of these went missing, so did a step.
    mentioned = {argv[1] for argv in command_lines if len(argv) > 1}
    assert {"migrate", "index", "serve", "train"} <= mentioned, mentioned
    for argv in command_lines:
        _check_semhash_command(argv)


def test_run_script_is_strict_bash():
    text = RUN_SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert os.access(RUN_SCRIPT, os.X_OK), "./run must be executable"
    result = subprocess.run(["bash", "-n", str(RUN_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_readme_test_command_is_exactly_what_ci_runs():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    command = next(line for line in ci_lines if "pytest" in line)
    readme_lines = (ROOT / "README.md").read_text().splitlines()
    assert command in readme_lines, f"README.md must show the CI test command verbatim:\n{command}"


def test_every_setting_is_documented_with_its_default():
    from service.settings import Settings

    rows = (ROOT / "README.md").read_text().splitlines()
    for name, field in Settings.model_fields.items():
        variable = f"SEMHASH_{name.upper()}"
        row = next((row for row in rows if row.startswith(f"| `{variable}` |")), None)
        assert row is not None, f"README.md's Configuration table lacks {variable}"
        default = "unset" if field.default is None else str(field.default)
        assert f"`{default.lower()}`" in row.lower() or (default == "unset" and "unset" in row), (
            f"README.md gives {variable} a default other than {default!r}: {row}"
        )


def test_api_table_matches_the_routes():
    from service.main import create_app

    def shape(path: str) -> str:  # parameter names may differ between code and prose
        return re.sub(r"\{[^}]*\}", "{}", path)

    app = create_app()
    paths = app.openapi()["paths"]
    served = {(method.upper(), shape(path)) for path, operations in paths.items() for method in operations}
    # The web page is kept out of the OpenAPI schema, but it is served and documented.
    assert TestClient(app).get("/").status_code == 200
    served.add(("GET", "/"))
    readme = (ROOT / "README.md").read_text()
    documented = {
        (method, shape(path))
        for method, path in re.findall(r"^\| (GET|POST|PUT|PATCH|DELETE) \| `([^`?]+)", readme, re.MULTILINE)
    }
    assert served - documented == set(), "routes missing from README.md's API table"
    assert documented - served == set(), "README.md's API table lists routes the app does not serve"


def _cli_commands(typer_app: typer.Typer, prefix: tuple[str, ...] = ()) -> Iterator[tuple[list[str], Any]]:
    """(path, callback) for every leaf command under `typer_app`."""
    for info in typer_app.registered_commands:
        assert info.callback is not None
        yield [*prefix, info.name or info.callback.__name__.replace("_", "-")], info.callback
    for group in typer_app.registered_groups:
        assert group.typer_instance is not None and group.name
        yield from _cli_commands(group.typer_instance, (*prefix, group.name))


def _parameter_infos(callback: Any) -> Iterator[tuple[str, ParameterInfo]]:
    """Typer's option/argument declarations of `callback`, as defaults or in `Annotated[...]`."""
    hints = typing.get_type_hints(callback, include_extras=True)
    for name, parameter in inspect.signature(callback).parameters.items():
        declared = [parameter.default, *typing.get_args(hints.get(name))[1:]]
        yield from ((name, info) for info in declared if isinstance(info, ParameterInfo))


def test_every_cli_command_and_option_explains_itself():
    commands = list(_cli_commands(app))
    assert {"serve", "index", "migrate"} <= {path[0] for path, _ in commands}
    for path, callback in commands:
        command = f"semhash {' '.join(path)}"
        assert inspect.getdoc(callback), f"`{command}` has no docstring, so its --help says nothing"
        for name, info in _parameter_infos(callback):
            assert info.help, f"`{command}`: parameter {name!r} has no help text"
        result = CliRunner().invoke(app, [*path, "--help"])
        assert result.exit_code == 0, f"`{command} --help` failed:\n{result.output}"
