"""Test helpers for pytest-dtsvirt itself (the fake hypervisor backend)."""
