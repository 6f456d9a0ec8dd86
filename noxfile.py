"""Developer sessions: nox -s tests | lint | typecheck | docs | bench.

Each session installs avatarkit with the extras it needs; torch is pinned to the 2.13.0 CPU build.
To run in the project's .venv instead (made by scripts/bootstrap.sh), add ``--no-venv``.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_venv = "yes"
TORCH = "torch==2.13.0"


def _install(session: nox.Session, extras: str) -> None:
    if session.venv_backend != "none":
        if "all" in extras:
            session.install(TORCH)
        session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (no network, no keys)."""
    _install(session, "all,dev")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check + format check, and the import-layer contract."""
    _install(session, "dev")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "examples")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src."""
    _install(session, "dev")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs strictly (mkdocs-material + mkdocstrings)."""
    _install(session, "dev")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark script; each prints its figures and ratios."""
    _install(session, "all,dev")
    import pathlib

    for script in sorted(pathlib.Path("benchmarks").glob("*.py")):
        if script.name != "sd_gpu.py":
            session.run("python", str(script))
