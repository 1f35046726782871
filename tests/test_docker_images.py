"""The Dockerfile's two images (serving without torch, training with CPU-only torch), statically.

No Docker engine is needed; deploy/smoke.sh builds and runs them for real. What is checked here is what
a build would otherwise find out late: paths copied from the context exist and reach it, the file builds
with the legacy builder as well as BuildKit, the serving image's venv never sees torch, and the service
really imports without the packages the serving image leaves out.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
from dockerfile_parse import DOCKERFILE, ROOT, copy_sources, dockerfile_stages, stage_parent

_spec = importlib.util.spec_from_file_location("deploy_requirements", ROOT / "deploy" / "requirements.py")
assert _spec and _spec.loader
requirements = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(requirements)
TRAINING_ONLY, dependencies, requirement_name = (
    requirements.TRAINING_ONLY,
    requirements.dependencies,
    requirements.requirement_name,
)


def _stage(name: str) -> list[tuple[str, str]]:
    stages = dict(dockerfile_stages())
    assert name in stages, f"the Dockerfile has no stage {name!r}"
    return stages[name]


def _lineage(name: str) -> list[str]:
    """`name` and every stage it builds on or copies /opt/venv from, transitively."""
    stages = dict(dockerfile_stages())
    seen, todo = [], [name]
    while todo:
        stage = todo.pop()
        if stage in seen or stage not in stages:
            continue
        seen.append(stage)
        todo.append(stage_parent(stages[stage]))
        todo += [origin for origin, _ in copy_sources(stages[stage]) if origin]
    return seen


def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip().strip("/") for line in lines if line.strip() and not line.startswith(("#", "!"))]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore drops `path` (or a folder above it); enough of Docker's rules for this file."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes for pattern in patterns)


def test_every_copied_path_exists_and_reaches_the_build():
    patterns = _dockerignore_patterns()
    # Secrets and the local virtual environment never enter the build context.
    assert _ignored(".env", patterns) and _ignored(".venv/bin/python", patterns)
    sources = [
        source
        for _, instructions in dockerfile_stages()
        for origin, source in copy_sources(instructions)
        if origin is None
    ]
    assert sources, "no COPY from the build context found"
    for source in sources:
        assert "$" not in source, f"{source}: a build argument without a default"
        assert not _ignored(source, patterns), f"{source} is excluded by .dockerignore"
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"


def test_the_legacy_builder_can_build_it():
    text = DOCKERFILE.read_text()
    # `RUN --mount` and heredocs need BuildKit; a `# syntax=` line makes BuildKit fetch a frontend image.
    for _, instructions in dockerfile_stages():
        for instruction, args in instructions:
            assert not (instruction == "RUN" and args.startswith("--")), f"RUN {args}: BuildKit only"
            assert "<<" not in args, f"{instruction} {args}: heredocs are BuildKit only"
    assert not re.search(r"^#\s*syntax=", text, flags=re.MULTILINE)
    # The base image is a build argument whose default is the official image.
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, flags=re.MULTILINE)
    assert dockerfile_stages()[0][1][0] == ("FROM", "${PYTHON_IMAGE} AS base")


def test_serving_is_the_default_lean_non_root_image():
    names = [name for name, _ in dockerfile_stages()]
    assert names[-1] == "serving", "the last stage (what `docker build .` makes) must be the serving image"
    serving = _stage("serving")
    users = [args for instruction, args in serving if instruction == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert any(i == "HEALTHCHECK" and "/healthz" in args for i, args in serving)
    assert not any(i == "RUN" for i, args in serving), "serving only copies: no package manager, no compiler"
    # Nothing serving is made from installs torch or matplotlib.
    for stage in _lineage("serving"):
        for instruction, args in _stage(stage):
            if instruction == "RUN":
                assert not re.search(r"torch==|requirements\.py training", args), f"{stage}: {args}"
    assert "training-build" not in _lineage("serving")


def test_training_image_adds_cpu_only_torch():
    assert "training-build" in _lineage("training")
    runs = [args for instruction, args in _stage("training-build") if instruction == "RUN"]
    torch_steps = [args for args in runs if "torch==" in args]
    assert torch_steps and all("TORCH_INDEX_URL" in args for args in torch_steps)
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in DOCKERFILE.read_text()
    pyproject_torch = re.search(r'"torch==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pyproject_torch and f"torch=={pyproject_torch.group(1)}" in torch_steps[0]


def test_requirement_lists_split_pyproject_without_losing_anything():
    pyproject = str(ROOT / "pyproject.toml")
    serving = {requirement_name(d) for d in dependencies("serving", pyproject)}
    training = {requirement_name(d) for d in dependencies("training", pyproject)}
    assert not serving & set(TRAINING_ONLY)
    assert training == serving | (set(TRAINING_ONLY) - {"torch"})


def test_the_service_imports_without_the_training_only_packages():
    """What the serving image runs (API, migrate, indexer, CLI) with torch and matplotlib unimportable."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        blocked = {[name.replace("-", "_") for name in TRAINING_ONLY]!r}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in blocked:
                    raise ImportError(f"{{name}} is not in the serving image")

        sys.meta_path.insert(0, Block())
        import semhash_cli, service.cli, service.main, service.bulk, service.upsert, service.migrate
        service.main.create_app()
        from typer.testing import CliRunner
        result = CliRunner().invoke(semhash_cli.app, ["serve", "--help"])
        assert result.exit_code == 0, result.output
        assert not any(m.split(".")[0] in blocked for m in sys.modules), sorted(sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "SEMHASH_MODELS_DIR": str(ROOT / "deploy" / "models")},
    )
    assert result.returncode == 0, result.stderr[-3000:]


DEPLOY_KEYS = (
    "serving_image_mb",
    "training_image_mb",
    "stack_to_first_search_seconds",
    "replica_visibility_seconds",
    "documents_before_restart",
    "documents_after_restart",
    "healthy",
    "engine",
)


def test_smoke_script_is_strict_bash_and_writes_every_key():
    script = ROOT / "deploy" / "smoke.sh"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert os.access(script, os.X_OK), "deploy/smoke.sh must be executable"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for key in DEPLOY_KEYS:
        assert f'"{key}":' in text, f"deploy/smoke.sh does not write {key}"
    helper = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "smoke_http.py")], capture_output=True, text=True
    )
    assert helper.returncode != 0 and "visibility" in helper.stderr  # usage, not a traceback


def test_committed_deploy_results_meet_the_targets():
    path = ROOT / "benchmarks" / "results" / "deploy.json"
    if not path.exists():
        pytest.skip("deploy/smoke.sh has not written benchmarks/results/deploy.json yet")
    results = json.loads(path.read_text())
    assert set(DEPLOY_KEYS) <= set(results)
    assert results["serving_image_mb"] < 600 and results["training_image_mb"] > results["serving_image_mb"]
    assert results["replica_visibility_seconds"] < 1.0
    assert results["documents_before_restart"] == results["documents_after_restart"] > 0
    assert results["healthy"] is True and "Docker" in results["engine"]
