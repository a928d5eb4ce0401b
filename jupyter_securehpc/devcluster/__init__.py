"""A local, single-machine cluster for the demo and the tests.

Everything the product talks to on a real site, started on loopback by our own code: munge, a one-node
Slurm with a ``gpu`` partition and GRES, and an OpenBao server. Each cluster lives in its own state folder
with its own ports, so the demo and a test run can coexist on one machine. Processes are tracked and
stopped by pid, never by name.
"""

from .cluster import LocalCluster, ServiceStatus
from .layout import ClusterLayout

__all__ = ["ClusterLayout", "LocalCluster", "ServiceStatus"]
