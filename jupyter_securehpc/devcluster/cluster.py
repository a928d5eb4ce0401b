"""Bring the whole local cluster up, down, and tell how each service is doing."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..node import prereqs
from . import commands, hub, munge, oidc, openbao, packages, slurm
from .layout import ClusterLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceStatus:
    """One service's state as ``securehpc dev status`` reports it."""

    name: str
    running: bool
    detail: str
    fix: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class LocalCluster:
    """munge, Slurm, OpenBao and the OpenID provider for one :class:`ClusterLayout`; every method is safe to repeat.

    The hub is not started by ``up`` (it needs a site chosen by the demo or the test: see ``devcluster.hub``),
    but ``down`` stops it too, so that no process of the cluster outlives it.
    """

    def __init__(self, layout: ClusterLayout) -> None:
        self.layout = layout

    @property
    def fuse_mode_file(self) -> Path:
        """Where ``up`` noted the mode /dev/fuse had before it changed it (``down`` names it)."""
        return self.layout.state_dir / "fuse-mode-before-up"

    def prepare_host(self) -> None:
        """Make this machine look like a secure compute node: FUSE usable by job users."""
        if prereqs.check_fuse() is not None and os.geteuid() == 0:
            # Real nodes ship /dev/fuse as 0666 through udev; machines without udev have 0600.
            before = prereqs.FUSE_DEVICE.stat().st_mode & 0o7777
            if not self.fuse_mode_file.exists():
                self.fuse_mode_file.write_text(f"{before:04o}\n")
            prereqs.FUSE_DEVICE.chmod(0o666)
            log.info("made %s mode 0666, as on a compute node", prereqs.FUSE_DEVICE)

    def fuse_left_changed(self) -> str | None:
        """What ``down`` says about /dev/fuse when ``up`` changed its mode and it still has ours; None otherwise.

        ``down`` does not change it back: another cluster on this machine (a test run) may need it still."""
        try:
            before = int(self.fuse_mode_file.read_text().strip(), 8)
            now = prereqs.FUSE_DEVICE.stat().st_mode & 0o7777
        except (OSError, ValueError):
            return None
        if now == before:
            return None
        return (
            f"{prereqs.FUSE_DEVICE} stays mode {now:04o} (it was {before:04o} before `up`; other clusters on this "
            f"machine may use it): chmod {before:04o} {prereqs.FUSE_DEVICE} to undo"
        )

    @property
    def _up(self) -> str:
        """The command that fixes a stopped service: ``securehpc dev up`` as it runs when pasted."""
        return commands.dev("up", self.layout.state_dir)

    def up(self, *, install: bool = True) -> None:
        if install:
            packages.install_all()
        self.prepare_host()
        munge.up(self.layout)
        slurm.up(self.layout)
        openbao.up(self.layout)
        oidc.up(self.layout)

    def down(self) -> None:
        # Reverse order: Slurm cancels its jobs while munge still authenticates the request.
        hub.down(self.layout)
        oidc.down(self.layout)
        openbao.down(self.layout)
        slurm.down(self.layout)
        munge.daemon(self.layout).stop()

    def status(self) -> list[ServiceStatus]:
        return [
            self._munge_status(),
            *self._slurm_status(),
            self._openbao_status(),
            self._oidc_status(),
            self._node_status(),
            self._tools_status(),
        ]

    # One method per service: each says what is wrong and the command that fixes it.
    def _munge_status(self) -> ServiceStatus:
        pid = munge.daemon(self.layout).pid()
        if pid is None:
            return ServiceStatus("munge", False, "munged is not running", self._up)
        if not munge.works(self.layout):
            return ServiceStatus("munge", False, f"munged (pid {pid}) does not decode its own credentials", self._up)
        return ServiceStatus("munge", True, f"pid {pid}, socket {self.layout.munge_socket}")

    def _slurm_status(self) -> list[ServiceStatus]:
        ctld, slurmd = slurm.daemons(self.layout)
        ctld_pid, slurmd_pid = ctld.pid(), slurmd.pid()
        statuses = []
        if ctld_pid is None:
            statuses.append(ServiceStatus("slurmctld", False, "slurmctld is not running", self._up))
        elif not slurm.controller_answers(self.layout):
            statuses.append(
                ServiceStatus(
                    "slurmctld",
                    False,
                    f"slurmctld (pid {ctld_pid}) does not answer `scontrol ping` "
                    f"(is munge running?): {ctld.log_tail(1)}",
                    self._up,
                )
            )
        else:
            statuses.append(ServiceStatus("slurmctld", True, f"pid {ctld_pid}, port {self.layout.slurmctld_port}"))
        state = slurm.node_state(self.layout) if ctld_pid is not None else None
        if slurmd_pid is None:
            statuses.append(ServiceStatus("slurmd", False, "slurmd is not running", self._up))
        elif state not in slurm.USABLE_STATES:
            statuses.append(
                ServiceStatus(
                    "slurmd",
                    False,
                    f"slurmd (pid {slurmd_pid}) runs but node {self.layout.node_name} is {state or 'unknown'}",
                    f"SLURM_CONF={self.layout.slurm_conf} scontrol update "
                    f"nodename={self.layout.node_name} state=resume; or {self._up}",
                )
            )
        else:
            statuses.append(
                ServiceStatus(
                    "slurmd",
                    True,
                    f"pid {slurmd_pid}, node {self.layout.node_name} {state}, gres gpu:{self.layout.gpus}",
                )
            )
        return statuses

    def _openbao_status(self) -> ServiceStatus:
        pid = openbao.daemon(self.layout).pid()
        if pid is None:
            return ServiceStatus("openbao", False, "the OpenBao server is not running", self._up)
        state = openbao.health(self.layout)
        if state is None:
            return ServiceStatus("openbao", False, f"pid {pid} does not answer on {self.layout.openbao_addr}", self._up)
        if not state["initialized"] or state["sealed"]:
            what = "sealed" if state["initialized"] else "not initialised"
            return ServiceStatus("openbao", False, f"pid {pid} is {what}", f"{self._up} (unseals it)")
        return ServiceStatus("openbao", True, f"pid {pid}, {self.layout.openbao_addr}, unsealed")

    def _oidc_status(self) -> ServiceStatus:
        pid = oidc.daemon(self.layout).pid()
        if pid is None:
            return ServiceStatus("oidc", False, "the OpenID Connect provider is not running", self._up)
        if oidc.discovery(self.layout) is None:
            return ServiceStatus("oidc", False, f"pid {pid} does not answer on {self.layout.oidc_issuer}", self._up)
        return ServiceStatus("oidc", True, f"pid {pid}, issuer {self.layout.oidc_issuer}")

    def _node_status(self) -> ServiceStatus:
        problems = prereqs.node_problems()
        if problems:
            return ServiceStatus("node", False, "; ".join(p.what for p in problems), "; ".join(p.fix for p in problems))
        return ServiceStatus("node", True, "bubblewrap, gocryptfs, /dev/fuse 0666, user namespaces")

    def _tools_status(self) -> ServiceStatus:
        missing = packages.missing_apt_packages()
        missing_node = packages.missing_node_packages()
        if missing or missing_node:
            names = missing + [f"npm:{name}" for name in missing_node]
            return ServiceStatus(
                "packages", False, f"missing: {', '.join(names)}", commands.dev("install", self.layout.state_dir)
            )
        return ServiceStatus("packages", True, "Debian and Node packages installed")
