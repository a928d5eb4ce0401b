"""Fixtures of the portal's tests (API and pages): a real hub of the local cluster with the portal as its
managed service and the test site's people (tests/portal_site.py), started once per test module."""

from __future__ import annotations

import portal_site
import pytest


@pytest.fixture(scope="module")
def site(local_cluster, unix_user, slurm_env):
    yield from portal_site.site(local_cluster, unix_user, slurm_env)
