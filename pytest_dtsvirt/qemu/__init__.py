"""The QEMU backend: argv building, launch, and the monitor and agent protocol clients."""
