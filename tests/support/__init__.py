"""Reusable helpers for the tests (real sshd, ...)."""
