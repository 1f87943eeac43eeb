"""The ported legacy suites (see README.md here).

Run through the project's test command (pyproject ``testpaths``), only :data:`CI_CASES`
run: each case boots DPDK guests under TCG for minutes. Name a path under
``examples/dts_ports`` on the command line (or set ``DTSVIRT_ALL_PORTS=1``) to run every
case.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

#: what the test command runs of the ports: one case of each suite that runs here
CI_CASES = (
    "vm2vm_virtio_pmd/test_vm2vm_virtio_pmd.py::TestVM2VMVirtioPMD::"
    "test_vm2vm_vhost_user_virito10_pmd_with_normal_path",
    "vhost_user_live_migration/test_vhost_user_live_migration.py::TestVhostUserLiveMigration::"
    "test_migrate_with_split_ring_virtio_pmd",
    "virtio_pvp_regression/test_virtio_pvp_regression.py::TestVirtioPVPRegression::"
    "test_perf_pvp_regression_modern_mergeable_path",
)


def _named_here(config: pytest.Config) -> bool:
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return False  # testpaths or the current directory, not a path named by the user
    for arg in config.args:
        path = Path(str(arg).split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("DTSVIRT_ALL_PORTS") == "1" or _named_here(config):
        return
    keep, drop = [], []
    for item in items:
        path = item.path.resolve()
        if HERE not in path.parents:
            keep.append(item)
            continue
        rel = f"{path.relative_to(HERE)}::{item.nodeid.split('::', 1)[1]}"
        (keep if rel in CI_CASES else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
