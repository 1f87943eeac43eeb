"""The compat layer's pytest plugin (entry point ``dtsvirt_compat``): records the running
test's request, so a legacy ``QEMUKvm(dut, name, suite)`` made in any test uses the plugin's
options, conf dir and factory (:mod:`pytest_dtsvirt.compat.context`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_dtsvirt.compat import context


@pytest.fixture(autouse=True)
def _dtsvirt_compat_request(request: pytest.FixtureRequest) -> Iterator[None]:
    """Cheap: nothing is connected or booted unless the test makes a legacy VM."""
    with context.test_request(request):
        yield
