"""Install what the local cluster needs and is missing: Debian packages and the Node programs.

Python packages come with the ``[dev]`` extra (``pip install -e '.[dev,test]'``: ``scripts/local.sh`` does that
first); :func:`require_python_extra` says so when they are missing.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from ..session.env import NODE_ROOT_ENV

log = logging.getLogger(__name__)

# Debian package -> a program that shows it is installed.
APT_PACKAGES = {
    "slurm-wlm": "slurmctld",
    "munge": "munged",
    "gocryptfs": "gocryptfs",
    "bubblewrap": "bwrap",
    "fuse3": "fusermount3",
    "nodejs": "node",
    "npm": "npm",
    # The browser of the JupyterLab extension's tests (Playwright drives it; its own download is not used).
    "chromium": "chromium",
}
NODE_PROGRAMS = ("configurable-http-proxy",)
NODE_PACKAGES = ("configurable-http-proxy", "oidc-provider")
DISTRIBUTION = "jupyter-securehpc"
EXTRA = "dev"
PACKAGE_DIR = Path(__file__).resolve().parent


def missing_python_packages() -> list[str]:
    """The requirements of the ``[dev]`` extra (read from the installed metadata) that are not installed."""
    try:
        requirements = [Requirement(text) for text in metadata.requires(DISTRIBUTION) or []]
    except metadata.PackageNotFoundError:
        return []  # not installed (code on sys.path only): nothing to compare with
    missing = []
    for requirement in requirements:
        marker = requirement.marker
        # Only the extra's own requirements: true with extra "dev", false without it.
        if marker is None or not marker.evaluate({"extra": EXTRA}) or marker.evaluate({"extra": ""}):
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or not requirement.specifier.contains(installed, prereleases=True):
            missing.append(f"{requirement.name}{requirement.specifier}")
    return missing


def require_python_extra() -> None:
    missing = missing_python_packages()
    if missing:
        raise RuntimeError(
            f"the local cluster needs the [dev] extra (missing: {', '.join(missing)}): "
            f"pip install '{DISTRIBUTION}[{EXTRA}]'"
        )


def node_root() -> Path:
    """The folder with ``package.json`` where npm installs the Node programs: ``$SECUREHPC_NODE_ROOT``, else the
    source checkout (an editable install), else this package's folder (the wheel ships ``package.json`` and its
    lock here). Node finds ``oidc-provider`` from ``oidc_provider.mjs``'s folder upwards, which both reach."""
    configured = os.environ.get(NODE_ROOT_ENV)
    if configured:
        return Path(configured)
    checkout = PACKAGE_DIR.parents[1]
    if (checkout / "package.json").exists():
        return checkout
    return PACKAGE_DIR


def node_bin(program: str) -> Path:
    return node_root() / "node_modules" / ".bin" / program


def missing_apt_packages() -> list[str]:
    return [package for package, program in APT_PACKAGES.items() if shutil.which(program) is None]


def missing_node_packages() -> list[str]:
    modules = node_root() / "node_modules"
    return [name for name in NODE_PACKAGES if not (modules / name / "package.json").exists()]


def install_apt(packages: list[str]) -> None:
    if not packages:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"missing Debian packages {' '.join(packages)}: run as root, or apt-get install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log.info("installing Debian packages: %s", " ".join(packages))
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=env,
        timeout=1800,
    )


def install_node() -> None:
    root = node_root()
    if not missing_node_packages():
        return
    if not (root / "package.json").exists():
        raise RuntimeError(f"no package.json in {root}: set SECUREHPC_NODE_ROOT to the folder that has it")
    # `npm ci` installs exactly the locked versions into ./node_modules; nothing global.
    command = "ci" if (root / "package-lock.json").exists() else "install"
    log.info("installing Node programs in %s", root / "node_modules")
    subprocess.run(["npm", command, "--no-audit", "--no-fund", "--loglevel=error"], cwd=root, check=True, timeout=900)


def install_all() -> None:
    install_apt(missing_apt_packages())
    install_node()
