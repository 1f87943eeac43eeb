"""Shared settings of the test suite."""

import os
from collections.abc import Iterator

import pytest
from support.sshd import SshdHandle, start_sshd

from pytest_dtsvirt.guest import default_cache_dir

# pytester runs inner pytest sessions with HOME moved into a temp dir; pin the test guest
# cache to the real one so those sessions reuse the built guest instead of rebuilding it.
os.environ.setdefault("DTSVIRT_CACHE_DIR", default_cache_dir())


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdHandle]:
    """A real OpenSSH server on a loopback address for the module's tests (a second DUT)."""
    handle = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield handle
    handle.stop()
