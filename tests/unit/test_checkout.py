"""A checkout stays clean after `pip install .`: git ignores what the build leaves.

setuptools builds in the source tree (`build/lib/...`, `build/bdist.<platform>/`) and
writes `<name>.egg-info/` next to the sources; none of it may show as untracked.
Checked with `git check-ignore` rather than by building, which would need the index for
the isolated build environment.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[2]

BUILD_LEFTOVERS = (
    "build/lib/component/__init__.py",
    "build/bdist.linux-x86_64/wheel/component/__init__.py",
    "xmpp_gateway.egg-info/PKG-INFO",
    "dist/xmpp_gateway-0.1.0-py3-none-any.whl",
)


def test_what_pip_install_leaves_is_ignored_by_git() -> None:
    checked = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "--no-index", "--verbose", *BUILD_LEFTOVERS],
        capture_output=True,
        text=True,
        check=False,
    )
    ignored = {line.split("\t")[-1] for line in checked.stdout.splitlines()}
    assert ignored == set(BUILD_LEFTOVERS), checked.stderr or checked.stdout
