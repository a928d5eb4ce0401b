"""Where a local cluster keeps its files and which loopback ports it uses."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from ..session.env import DEV_STATE_ENV
from ..util.files import atomic_write

DEFAULT_STATE_DIR = Path("/var/lib/securehpc-dev")

# Ports of the demo cluster; chosen away from Slurm's (6817/6818) and Vault's (8200) defaults so that a
# machine that also runs the real services keeps working.
DEFAULT_PORTS = {
    "slurmctld_port": 16817,
    "slurmd_port": 16818,
    "openbao_port": 18200,
    "openbao_cluster_port": 18201,
    "oidc_port": 19080,
    "hub_port": 18000,
    "hub_api_port": 18081,
    "proxy_api_port": 18001,
}
# Ports added after the first release: a cluster.json written before them gets them on its next load.
LATER_PORTS = ("oidc_port", "hub_port", "hub_api_port", "proxy_api_port")


def ports_from(base: int) -> dict[str, int]:
    """``base``, ``base + 1``, ... for the services in the order of DEFAULT_PORTS (``securehpc dev --port-base``):
    a second cluster on the same machine, beside the demo's fixed ports."""
    last = base + len(DEFAULT_PORTS) - 1
    if base < 1024 or last > 65535:
        raise ValueError(
            f"port base {base} gives ports {base}-{last}: choose a base from 1024 to {65536 - len(DEFAULT_PORTS)}"
        )
    return {name: base + offset for offset, name in enumerate(DEFAULT_PORTS)}


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
    oidc_port: int = DEFAULT_PORTS["oidc_port"]
    hub_port: int = DEFAULT_PORTS["hub_port"]
    hub_api_port: int = DEFAULT_PORTS["hub_api_port"]
    proxy_api_port: int = DEFAULT_PORTS["proxy_api_port"]

    @classmethod
    def load_or_create(
        cls, state_dir: Path | str, *, random_ports: bool = False, port_base: int | None = None
    ) -> ClusterLayout:
        """Read the layout saved in ``state_dir``, or create and save one.

        ``random_ports`` picks free ports instead of the defaults (used by the tests so that they can run
        beside a demo cluster); ``port_base`` takes consecutive ports from there (:func:`ports_from`). Both
        matter only when the folder is new: its saved ports are kept, and a ``port_base`` that disagrees
        with them is refused (ValueError).
        """
        state_dir = Path(state_dir).absolute()
        wanted = ports_from(port_base) if port_base is not None else None
        saved = state_dir / "cluster.json"
        if saved.exists():
            data = json.loads(saved.read_text())
            missing = [name for name in LATER_PORTS if name not in data]
            for name in missing:
                data[name] = free_port() if random_ports else (wanted or DEFAULT_PORTS)[name]
            layout = cls(**{**data, "state_dir": state_dir})
            if wanted and {name: getattr(layout, name) for name in wanted} != wanted:
                raise ValueError(
                    f"the local cluster in {state_dir} already uses ports from {layout.slurmctld_port}, not from "
                    f"{port_base}: leave out --port-base, or choose another --state-dir"
                )
            if missing:
                # Saved at once, so that the next load finds the same ports.
                layout._save()
            return layout
        if wanted:
            ports = wanted
        else:
            ports = {name: free_port() for name in DEFAULT_PORTS} if random_ports else dict(DEFAULT_PORTS)
        layout = cls(state_dir=state_dir, **ports)
        # 0755: munge's socket and the Slurm configuration below must be reachable by job users.
        state_dir.mkdir(parents=True, exist_ok=True)
        state_dir.chmod(0o755)
        layout._save()
        return layout

    def _save(self) -> None:
        data = asdict(self)
        data.pop("state_dir")
        atomic_write(self.state_dir / "cluster.json", json.dumps(data, indent=2) + "\n", mode=0o644)

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

    # --- OpenID Connect provider ---------------------------------------------------------------
    @property
    def oidc_dir(self) -> Path:
        return self.state_dir / "oidc"

    @property
    def oidc_issuer(self) -> str:
        return f"http://127.0.0.1:{self.oidc_port}"

    @property
    def oidc_config_file(self) -> Path:
        # Holds the hub's client secret, cookie keys and the signing key: 0600 in a 0700 folder.
        return self.oidc_dir / "private" / "provider.json"

    @property
    def oidc_accounts_file(self) -> Path:
        return self.oidc_dir / "private" / "accounts.json"

    # --- hub -------------------------------------------------------------------------------------
    @property
    def hub_dir(self) -> Path:
        return self.state_dir / "hub"

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.hub_port}"

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
    return Path(os.environ.get(DEV_STATE_ENV, DEFAULT_STATE_DIR))
