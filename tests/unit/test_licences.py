"""Every runtime dependency, direct or not, is under a licence the AGPL-3.0 can include.

The gateway is AGPL-3.0-or-later (aioimaplib is GPL-3.0, which rules out a permissive
licence for the whole). A dependency added later with a licence outside ALLOWED, or with
no licence metadata at all, fails here, so the question is asked before it lands.
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import Distribution, distribution
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).parents[2]

ALLOWED = {
    "MIT", "MIT-0", "BSD", "BSD-2-Clause", "BSD-3-Clause", "ISC", "Apache-2.0", "PSF-2.0",
    "MPL-2.0", "LGPL-2.1-or-later", "LGPL-3.0-or-later", "GPL-3.0-only", "GPL-3.0-or-later",
    "AGPL-3.0-only", "AGPL-3.0-or-later",
}  # fmt: skip
"""SPDX identifiers whose code may be part of an AGPL-3.0-or-later program."""

CLASSIFIERS = {
    "MIT License": "MIT",
    "BSD License": "BSD",
    "ISC License (ISCL)": "ISC",
    "Apache Software License": "Apache-2.0",
    "Python Software Foundation License": "PSF-2.0",
}
"""Trove classifiers of packages that declare no SPDX expression, as SPDX identifiers."""

FREE_TEXT = {"ISC License": "ISC", "BSD": "BSD"}
"""`License:` fields that are not SPDX identifiers but name one."""

UNDECLARED = {"tempora": "MIT"}
"""Packages with no licence metadata, by the LICENSE file they ship (read by hand)."""


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure() -> dict[str, Distribution]:
    """xmpp-gateway's installed runtime dependencies, transitively, extras followed."""
    found: dict[str, Distribution] = {}
    pending: list[tuple[str, frozenset[str]]] = [("xmpp-gateway", frozenset())]
    while pending:
        name, extras = pending.pop()
        dist = distribution(name)
        found[_key(name)] = dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            wanted = requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in (*extras, "")
            )
            if wanted and _key(requirement.name) not in found:
                pending.append((requirement.name, frozenset(requirement.extras)))
    del found["xmpp-gateway"]
    return found


def licence_of(name: str, dist: Distribution) -> set[str]:
    """The SPDX identifiers a distribution declares (every part of an AND/OR expression)."""
    meta = dist.metadata
    if expression := meta.get("License-Expression"):
        return set(re.findall(r"[A-Za-z0-9.+-]+", expression)) - {"AND", "OR", "WITH"}
    free = (meta.get("License") or "").strip()
    if free in ALLOWED or free in FREE_TEXT:
        return {FREE_TEXT.get(free, free)}
    classified = {
        CLASSIFIERS.get(c.split(" :: ")[-1], c)
        for c in meta.get_all("Classifier") or []
        if c.startswith("License :: OSI Approved :: ")
    }
    if classified:
        return classified
    return {UNDECLARED[name]} if name in UNDECLARED else {f"no licence metadata ({free[:40]!r})"}


def test_every_runtime_dependency_has_an_allowed_licence():
    refused = {
        name: sorted(licences - ALLOWED)
        for name, dist in runtime_closure().items()
        if (licences := licence_of(name, dist)) - ALLOWED
    }
    assert not refused, f"licences not in ALLOWED: {refused}"


def test_the_project_declares_agpl_and_ships_its_text():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "AGPL-3.0-or-later"
    assert "GNU AFFERO GENERAL PUBLIC LICENSE" in (ROOT / "LICENSE").read_text()


def test_the_readme_names_every_direct_dependency_and_its_licence():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Licence") :]
    for line in project["dependencies"]:
        name = Requirement(line).name
        licences = licence_of(_key(name), distribution(name))
        row = next((r for r in section.splitlines() if r.startswith(f"| {name} |")), None)
        assert row is not None, f"README's licence table has no row for {name}"
        assert all(licence in row for licence in licences), (row, licences)
