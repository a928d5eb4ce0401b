"""Where a project's stores lie: ``projects/P/workspace`` and ``projects/P/datasets/D``, written once.

The same shape is used under the store root on shared storage (ciphertext folders, :class:`StoreLayout`) and
under the key prefix in OpenBao (``keys.paths.KeyPaths``): one store, one key, at the same relative place.
Every name is checked on the way in, so that no part can hold '/' or '..' and point elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .names import validate_name

PROJECTS = "projects"
WORKSPACE = "workspace"
DATASETS = "datasets"


def workspace_parts(project: str) -> tuple[str, ...]:
    """``("projects", P, "workspace")``: the project's workspace store, relative to a root."""
    return (PROJECTS, validate_name("project", project), WORKSPACE)


def datasets_parts(project: str) -> tuple[str, ...]:
    """``("projects", P, "datasets")``: the folder of the datasets ``project`` owns, relative to a root."""
    return (PROJECTS, validate_name("project", project), DATASETS)


def dataset_parts(owner: str, dataset: str) -> tuple[str, ...]:
    """``("projects", OWNER, "datasets", D)``: one dataset's store, relative to a root."""
    return (*datasets_parts(owner), validate_name("dataset", dataset))


@dataclass(frozen=True)
class StoreLayout:
    """The encrypted stores under one store root (``SecureHPC.store_root``; the same on hub and nodes)."""

    root: Path

    def projects_dir(self) -> Path:
        return Path(self.root, PROJECTS)

    def project_dir(self, project: str) -> Path:
        return Path(self.root, PROJECTS, validate_name("project", project))

    def workspace(self, project: str) -> Path:
        return Path(self.root, *workspace_parts(project))

    def datasets_dir(self, project: str) -> Path:
        return Path(self.root, *datasets_parts(project))

    def dataset(self, owner: str, dataset: str) -> Path:
        return Path(self.root, *dataset_parts(owner, dataset))

    @staticmethod
    def workspace_in(project_dir: Path) -> Path:
        """The workspace store in a project's folder, also one built aside before its rename into place."""
        return Path(project_dir, WORKSPACE)

    @staticmethod
    def datasets_in(project_dir: Path) -> Path:
        """The folder of the datasets in a project's folder, also one built aside before its rename."""
        return Path(project_dir, DATASETS)
