"""constraints.txt, the versions CI and the image install, agrees with pyproject.toml's ranges and is complete."""

from __future__ import annotations

import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from support import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pins() -> dict[str, Version]:
    found = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            found[canonicalize_name(name)] = Version(version)
    return found


def requirements() -> list[Requirement]:
    listed = [*PROJECT["dependencies"], *(r for extra in PROJECT["optional-dependencies"].values() for r in extra)]
    return [Requirement(r) for r in listed if not r.startswith("mobilenet-serve")]


def test_every_dependency_is_pinned_within_its_range() -> None:
    pinned = pins()
    for requirement in requirements():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in constraints.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (requirement, pinned[name])


def test_this_environment_has_the_pinned_versions_of_the_runtime_dependencies() -> None:
    # CI installs with -c constraints.txt: what the tests run against is what the image gets.
    pinned = pins()
    for requirement in (Requirement(r) for r in PROJECT["dependencies"]):
        name = canonicalize_name(requirement.name)
        assert Version(metadata.version(name)) == pinned[name], name
