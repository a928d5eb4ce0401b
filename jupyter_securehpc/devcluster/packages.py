"""Install what the local cluster needs and is missing: Debian packages and the Node programs.

Python packages come with ``pip install -e .[test]`` (``scripts/local.sh`` does that first).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

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
}
NODE_PROGRAMS = ("configurable-http-proxy",)
NODE_PACKAGES = ("configurable-http-proxy", "oidc-provider")


def checkout_root() -> Path:
    """The source checkout that holds ``package.json`` for the Node programs."""
    configured = os.environ.get("SECUREHPC_NODE_ROOT")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2]


def node_bin(program: str) -> Path:
    return checkout_root() / "node_modules" / ".bin" / program


def missing_apt_packages() -> list[str]:
    return [package for package, program in APT_PACKAGES.items() if shutil.which(program) is None]


def missing_node_packages() -> list[str]:
    modules = checkout_root() / "node_modules"
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
    root = checkout_root()
    if not missing_node_packages():
        return
    if not (root / "package.json").exists():
        raise RuntimeError(f"no package.json in {root}: set SECUREHPC_NODE_ROOT to the source checkout")
    # `npm ci` installs exactly the locked versions into ./node_modules; nothing global.
    command = "ci" if (root / "package-lock.json").exists() else "install"
    log.info("installing Node programs in %s", root / "node_modules")
    subprocess.run(["npm", command, "--no-audit", "--no-fund", "--loglevel=error"], cwd=root, check=True, timeout=900)


def install_all() -> None:
    install_apt(missing_apt_packages())
    install_node()
