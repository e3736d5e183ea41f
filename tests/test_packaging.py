"""The wheel as a user installs it: one package, its data files, a light import.

Builds the wheel from a copy of the package's sources (so the checkout gets no
build/ directory), installs it without dependencies into a fresh virtualenv
and runs it from a directory that has a ``shared/`` package of its own. The
fresh environment borrows this one's third-party packages through a ``.pth``
file appended after its own site-packages, so nothing is downloaded at test
time, and checks that what the light import loads is declared by the wheel.
Takes ~15 s (most of it the isolated wheel build).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import tomllib
import venv
import zipfile
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
PACKAGE_DIRS: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
DIST_INFO = f"ssehub-{VERSION}.dist-info"
# what `python -m venv` itself puts into site-packages
VENV_OWN = {"pip", "setuptools", "_distutils_hack", "pkg_resources", "distutils-precedence.pth"}
SERVER_MODULES = {
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "sqlmodel",
    "aiosqlite",
    "asyncpg",
    "jwt",
    "prometheus_client",
}


def run(*args: str | Path, cwd: Path | None = None) -> str:
    return run_both(*args, cwd=cwd)[0]


def run_both(*args: str | Path, cwd: Path | None = None) -> tuple[str, str]:
    """stdout and stderr of a command that must succeed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSEHUB_", "PYTHON"))}
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=150
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout, done.stderr


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("packaging")


@pytest.fixture(scope="module")
def built(workdir: Path) -> tuple[Path, str]:
    """The wheel, and what its build printed."""
    src = workdir / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for directory in sorted(set(PACKAGE_DIRS.values())):
        shutil.copytree(ROOT / directory, src / directory, ignore=ignore)
    out = workdir / "dist"
    build: list[str | Path] = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "-w",
        out,
        src,
    ]
    if _backend_installed():  # else pip builds in an isolated env of its own (slower)
        build.append("--no-build-isolation")
    stdout, stderr = run_both(*build)
    (wheel,) = out.glob("ssehub-*.whl")
    return wheel, stdout + stderr


@pytest.fixture(scope="module")
def wheel(built: tuple[Path, str]) -> Path:
    return built[0]


def test_the_build_says_nothing(built: tuple[Path, str]) -> None:
    """No setuptools warning (such as edge/static/ taken for a package that
    "would be ignored"): pip's own lines about this machine's index set-up aside."""
    output = built[1]
    assert not re.search(r"\w+Warning\b|would be ignored", output), output


def _backend_installed() -> bool:
    """Whether this environment has a setuptools the build requires."""
    try:
        have = Version(version("setuptools"))
    except PackageNotFoundError:
        return False
    return all(
        have in Requirement(r).specifier
        for r in PYPROJECT["build-system"]["requires"]
        if Requirement(r).name == "setuptools"
    )


@pytest.fixture(scope="module")
def installed(workdir: Path, wheel: Path) -> Iterator[Path]:
    """A fresh virtualenv with the wheel (and nothing else of ours) installed."""
    env_dir = workdir / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)  # this pip installs into it: faster
    python = env_dir / "bin" / "python"
    pip = (sys.executable, "-m", "pip", "--python", python)
    run(*pip, "install", "-q", "--no-deps", "--no-index", wheel)
    yield env_dir


def site_packages(env_dir: Path) -> Path:
    (path,) = (env_dir / "lib").glob("python3.*/site-packages")
    return path


def test_the_wheel_holds_only_the_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"ssehub", DIST_INFO}
    assert "ssehub/edge/static/index.html" in names
    assert "ssehub/py.typed" in names
    assert wheel.name == f"ssehub-{VERSION}-py3-none-any.whl"


def test_the_wheel_holds_every_module_where_it_imports(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for package in PYPROJECT["tool"]["setuptools"]["packages"]:
        parts = package.split(".")
        # the directory of the longest mapped prefix, then the rest of the name
        n = max(i for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in PACKAGE_DIRS)
        directory = Path(PACKAGE_DIRS[".".join(parts[:n])], *parts[n:])
        for source in (ROOT / directory).glob("*.py"):
            expected.add("/".join([*parts, source.name]))
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert {n for n in names if n.endswith(".py")} == expected


def test_the_wheel_declares_the_command_and_the_light_dependencies(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    entry_points = archive.read(f"{DIST_INFO}/entry_points.txt").decode()
    assert "ssehub = ssehub.cli:main" in entry_points
    metadata = archive.read(f"{DIST_INFO}/METADATA").decode().splitlines()
    required = [line.split(": ", 1)[1] for line in metadata if line.startswith("Requires-Dist: ")]
    light = {str(Requirement(r)) for r in required if "extra ==" not in r}
    assert light == {str(Requirement(r)) for r in PYPROJECT["project"]["dependencies"]}


def test_the_install_adds_only_the_package(installed: Path) -> None:
    top = {p.name for p in site_packages(installed).iterdir()} - {"__pycache__", "zz_borrowed.pth"}
    ours = {
        name
        for name in top
        if name not in VENV_OWN and not name.startswith(("pip-", "setuptools-"))  # their dist-info
    }
    assert ours == {"ssehub", DIST_INFO}


LIGHT_IMPORT = """
import sys

from ssehub import InvalidMessage, Publisher
import ssehub

after_import = dict(sys.modules)  # before the checker's own imports below

import json
from importlib.metadata import packages_distributions, requires
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

borrowed = sys.argv[1:]
# the closure of ssehub's declared (non-extra) dependencies
declared, todo = set(), ["ssehub"]
while todo:
    name = canonicalize_name(todo.pop())
    if name in declared:
        continue
    declared.add(name)
    for line in requires(name) or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req.name)
dists = packages_distributions()
loaded = sorted(
    {
        name.split(".")[0]
        for name, mod in after_import.items()
        if any(str(getattr(mod, "__file__", None) or "").startswith(b) for b in borrowed)
    }
)
undeclared = [
    top for top in loaded
    if not {canonicalize_name(d) for d in dists.get(top, [])} & declared
]
print(json.dumps({
    "file": ssehub.__file__,
    "version": ssehub.__version__,
    "modules": sorted(after_import),
    "undeclared": undeclared,
    "publisher": Publisher.__module__,
    "invalid": InvalidMessage.__module__,
}))
"""


@pytest.fixture(scope="module")
def elsewhere(workdir: Path, installed: Path) -> Path:
    """A directory a user runs from, with a ``shared`` package of its own; the
    installed ssehub must not pick it up (the source tree's name for it)."""
    home = workdir / "elsewhere"
    (home / "shared").mkdir(parents=True)
    (home / "shared" / "__init__.py").write_text("")
    (home / "shared" / "publisher.py").write_text("raise ImportError('the wrong shared')\n")
    # this environment's third-party packages, after the fresh venv's own
    borrowed = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (site_packages(installed) / "zz_borrowed.pth").write_text("\n".join(borrowed) + "\n")
    return home


def test_the_light_import_pulls_no_server_dependency(installed: Path, elsewhere: Path) -> None:
    borrowed = (site_packages(installed) / "zz_borrowed.pth").read_text().split()
    out = run(installed / "bin" / "python", "-c", LIGHT_IMPORT, *borrowed, cwd=elsewhere)
    got = json.loads(out)
    assert got["file"] == str(site_packages(installed) / "ssehub" / "__init__.py")
    assert (got["version"], got["publisher"], got["invalid"]) == (
        VERSION,
        "ssehub.publisher",
        "ssehub.errors",
    )
    modules = set(got["modules"])
    assert not modules & SERVER_MODULES, sorted(modules & SERVER_MODULES)
    assert "shared" not in modules
    assert not any(
        m.startswith(("ssehub.edge", "ssehub.dispatcher", "ssehub.storage")) for m in modules
    )
    assert got["undeclared"] == [], "imported but not in the wheel's dependencies"


def test_the_command_prints_the_version(installed: Path, elsewhere: Path) -> None:
    assert run(installed / "bin" / "ssehub", "--version", cwd=elsewhere) == f"ssehub {VERSION}\n"


EVERY_TOP_MODULE = """
import importlib
import importlib.abc
import pkgutil
import sys

SERVER = set(sys.argv[1].split(","))


class Refuse(importlib.abc.MetaPathFinder):
    # the light install: the server extra's packages are not there
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in SERVER:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Refuse())
import ssehub

for info in pkgutil.iter_modules(ssehub.__path__):
    if not info.ispkg:
        importlib.import_module(f"ssehub.{info.name}")
        print(info.name)
"""


def test_every_module_directly_under_the_package_imports_on_the_light_install(
    installed: Path, elsewhere: Path
) -> None:
    """Only the subpackages (edge, dispatcher, storage, cli) need the server extra."""
    server = ",".join(sorted(SERVER_MODULES))
    out = run(installed / "bin" / "python", "-c", EVERY_TOP_MODULE, server, cwd=elsewhere)
    imported = set(out.split())
    assert {"publisher", "sender", "config", "topology", "schema", "logs"} <= imported
