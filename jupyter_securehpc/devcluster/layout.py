"""Where a local cluster keeps its files and which loopback ports it uses."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from ..util.files import atomic_write

DEFAULT_STATE_DIR = Path("/var/lib/securehpc-dev")

# Ports of the demo cluster; chosen away from Slurm's (6817/6818) and Vault's (8200) defaults so that a
# machine that also runs the real services keeps working.
DEFAULT_PORTS = {
    "slurmctld_port": 16817,
    "slurmd_port": 16818,
    "openbao_port": 18200,
    "openbao_cluster_port": 18201,
}


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ClusterLayout:
    """The state folder and ports of one local cluster.

    The layout is saved as ``cluster.json`` in the state folder on first use, so that every later
    ``up``/``down``/``status`` of the same folder finds the same ports.
    """

    state_dir: Path
    slurmctld_port: int
    slurmd_port: int
    openbao_port: int
    openbao_cluster_port: int
    cluster_name: str = "securehpc"
    node_name: str = "securehpc-n1"
    gpus: int = 2

    @classmethod
    def load_or_create(cls, state_dir: Path | str, *, random_ports: bool = False) -> ClusterLayout:
        """Read the layout saved in ``state_dir``, or create and save one.

        ``random_ports`` picks free ports instead of the defaults (used by the tests so that they can run
        beside a demo cluster).
        """
        state_dir = Path(state_dir).absolute()
        saved = state_dir / "cluster.json"
        if saved.exists():
            data = json.loads(saved.read_text())
            data["state_dir"] = state_dir
            return cls(**data)
        ports = {name: free_port() for name in DEFAULT_PORTS} if random_ports else dict(DEFAULT_PORTS)
        layout = cls(state_dir=state_dir, **ports)
        # 0755: munge's socket and the Slurm configuration below must be reachable by job users.
        state_dir.mkdir(parents=True, exist_ok=True)
        state_dir.chmod(0o755)
        data = asdict(layout)
        data.pop("state_dir")
        atomic_write(saved, json.dumps(data, indent=2) + "\n", mode=0o644)
        return layout

    # --- munge -----------------------------------------------------------------------------------
    @property
    def munge_dir(self) -> Path:
        return self.state_dir / "munge"

    @property
    def munge_private_dir(self) -> Path:
        # munged refuses a key or seed that others can read; the socket folder must be world-searchable.
        return self.munge_dir / "private"

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "munge.socket"

    @property
    def munge_key(self) -> Path:
        return self.munge_private_dir / "munge.key"

    # --- slurm -----------------------------------------------------------------------------------
    @property
    def slurm_dir(self) -> Path:
        return self.state_dir / "slurm"

    @property
    def slurm_conf(self) -> Path:
        return self.slurm_dir / "slurm.conf"

    @property
    def gpu_device_dir(self) -> Path:
        return self.slurm_dir / "dev"

    # --- openbao ---------------------------------------------------------------------------------
    @property
    def openbao_dir(self) -> Path:
        return self.state_dir / "openbao"

    @property
    def openbao_addr(self) -> str:
        return f"http://127.0.0.1:{self.openbao_port}"

    @property
    def openbao_init_file(self) -> Path:
        return self.openbao_dir / "private" / "init.json"

    # --- processes -------------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    def client_env(self) -> dict[str, str]:
        """Environment variables that point Slurm and OpenBao clients at this cluster (no secrets)."""
        return {"SLURM_CONF": str(self.slurm_conf), "VAULT_ADDR": self.openbao_addr}


def default_state_dir() -> Path:
    """The demo cluster's folder: ``$SECUREHPC_DEV_STATE`` or ``/var/lib/securehpc-dev``."""
    return Path(os.environ.get("SECUREHPC_DEV_STATE", DEFAULT_STATE_DIR))
