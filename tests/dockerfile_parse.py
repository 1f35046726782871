"""Just enough of a Dockerfile parser for the deployment tests (no Docker engine needed)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"

Instructions = list[tuple[str, str]]


def dockerfile_instructions(path: Path = DOCKERFILE) -> Instructions:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            pairs.append((instruction.upper(), args.strip()))
    return pairs


def dockerfile_stages(path: Path = DOCKERFILE) -> list[tuple[str, Instructions]]:
    """The stages as (name, instructions); the FROM line itself is the first instruction."""
    stages: list[tuple[str, Instructions]] = []
    for instruction, args in dockerfile_instructions(path):
        if instruction == "FROM":
            words = args.split()
            stages.append((words[-1] if "AS" in (w.upper() for w in words) else words[0], []))
        if stages:
            stages[-1][1].append((instruction, args))
    return stages


def stage_parent(instructions: Instructions) -> str:
    """The image or stage a stage starts FROM."""
    return instructions[0][1].split()[0]


def stage_args(instructions: Instructions) -> dict[str, str]:
    """ARG defaults declared in a stage."""
    found = {}
    for instruction, args in instructions:
        if instruction == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            found[name] = value
    return found


def copy_sources(instructions: Instructions) -> list[tuple[str | None, str]]:
    """(--from stage or None, source) of every COPY/ADD, ARG defaults substituted."""
    defaults = stage_args(instructions)
    sources = []
    for instruction, args in instructions:
        if instruction in {"COPY", "ADD"}:
            words = shlex.split(args)
            origin = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            paths = [w for w in words if not w.startswith("--")][:-1]
            for path in paths:
                path = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), path)
                sources.append((origin, path))
    return sources
