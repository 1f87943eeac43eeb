"""The compat layer's pytest plugin (entry point ``dtsvirt_compat``): records the running
test's request, so a legacy ``QEMUKvm(dut, name, suite)`` made in any test uses the plugin's
options, conf dir and factory (:mod:`pytest_dtsvirt.compat.context`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_dtsvirt.compat import context


@pytest.fixture(scope="session", autouse=True)
def _dtsvirt_compat_session(request: pytest.FixtureRequest) -> Iterator[None]:
    """For VMs made outside a test (in a module or session fixture): the session's
    ``vm_factory``, asked for only when such a VM is made."""
    with context.session_request(request):
        yield


@pytest.fixture(autouse=True)
def _dtsvirt_compat_request(request: pytest.FixtureRequest) -> Iterator[None]:
    """Cheap: nothing is connected or booted unless the test makes a legacy VM."""
    with context.test_request(request):
        yield
