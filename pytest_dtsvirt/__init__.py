"""pytest-dtsvirt: real QEMU/KVM virtual machines as pytest fixtures (DTS virtualization)."""

__version__ = "0.1.0"
