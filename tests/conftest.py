"""Shared settings of the test suite."""

import os

from pytest_dtsvirt.guest import default_cache_dir

# pytester runs inner pytest sessions with HOME moved into a temp dir; pin the test guest
# cache to the real one so those sessions reuse the built guest instead of rebuilding it.
os.environ.setdefault("DTSVIRT_CACHE_DIR", default_cache_dir())
