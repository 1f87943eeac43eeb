"""The VM runtime: run dirs, supervised qemu, readiness, teardown, reaper."""
