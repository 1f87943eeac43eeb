"""How the framework and a human get into one VM: the guest login and VNC, with their secrets.

The project's test guest has no usable root password of its own. Per VM the runtime sets
one through the guest agent (``guest-set-user-password``; the agent socket is in the VM's
0700 run dir, so only the DUT user can do that): the cfg's ``login`` password when the cfg
names one, else a fresh random one. A disk image's guest is the user's: its cfg ``login``
(or the legacy default) is used as it is.

VNC runs only when the cfg asks for it, with ``password=on``; the runtime sets a random
password through QMP and reads back the display qemu took. Passwords stay in memory
(registered in :mod:`pytest_dtsvirt.secret`, so no output shows them); only a kept VM's
generated ones are written, to 0600 files in its run dir, which :meth:`Access.reach_lines`
points at.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_dtsvirt import secret
from pytest_dtsvirt.config.model import LEGACY_PASSWORD, VmSpec
from pytest_dtsvirt.errors import DtsvirtError

log = logging.getLogger("pytest_dtsvirt")

#: VNC display N listens on TCP port 5900 + N
VNC_PORT_BASE = 5900
GUEST_PASSWORD_FILE = "guest-password"  # noqa: S105 (a file name)
VNC_PASSWORD_FILE = "vnc-password"  # noqa: S105 (a file name)
_IN_MEMORY = "    password: generated for this run, kept in memory only"


@dataclass
class Access:
    """The login and VNC of one VM (secrets in memory, ``repr`` without them)."""

    vm_name: str
    user: str = "root"
    password: str | None = field(default=None, repr=False)
    generated: bool = False  # the password was generated (not the cfg's)
    password_file: str | None = None
    vnc_display: int | None = None
    vnc_where: str = ""  # host:port
    vnc_password: str | None = field(default=None, repr=False)
    vnc_password_file: str | None = None

    def choose_login(self, spec: VmSpec) -> str:
        """The password to log in with: the cfg's, else a fresh one for the test guest,
        else (a disk image) the legacy default."""
        self.user = spec.login.user
        password = spec.login.password
        self.generated = password is None and spec.uses_default_guest
        if password is None:
            password = secret.generate() if spec.uses_default_guest else LEGACY_PASSWORD
        self.password = password
        return password

    def setup_vnc(self, command: Callable[..., Any], wanted: int | None) -> None:
        """Set a random VNC password through QMP ``command`` (qemu runs VNC with
        ``password=on``: nobody gets in before this) and read back the display qemu took;
        a warning when it is not the ``wanted`` one (taken by someone else)."""
        self.vnc_password = secret.generate(6)  # VNC authentication uses 8 characters
        command("set_password", protocol="vnc", password=self.vnc_password)
        info = command("query-vnc")
        host, port = str(info.get("host", "?")), int(info.get("service", 0))
        self.vnc_display = display = port - VNC_PORT_BASE
        self.vnc_where = f"{host}:{port}"
        if wanted is not None and display != wanted:
            log.warning("%s: VNC display %d is taken; qemu chose display %d (%s port %d)",
                        self.vm_name, wanted, display, host, port)
        else:
            log.info("%s: VNC on %s display %d (port %d), password-protected", self.vm_name,
                     host, display, port)

    def write_files(self, write: Callable[[str, bytes, int], None], run_dir: str) -> None:
        """A kept VM's generated passwords, for a human: 0600 files in its run dir (0700).
        ``write`` is the DUT session's ``write_file``."""
        if self.generated and self.password is not None:
            self.password_file = self._write(write, run_dir, GUEST_PASSWORD_FILE,
                                             self.password)
        if self.vnc_password is not None:
            self.vnc_password_file = self._write(write, run_dir, VNC_PASSWORD_FILE,
                                                 self.vnc_password)

    def _write(self, write: Callable[[str, bytes, int], None], run_dir: str, name: str,
               value: str) -> str | None:
        path = f"{run_dir.rstrip('/')}/{name}"
        try:
            write(path, value.encode() + b"\n", 0o600)
            return path
        except DtsvirtError as exc:
            log.warning("%s: cannot write %s: %s", self.vm_name, path, exc)
            return None

    def reach_lines(self, hostfwd_port: int | None, via: str) -> list[str]:
        """The SSH and VNC lines of "how to reach it" (``via``: " (on the DUT x)" or "");
        where the passwords are, never the passwords."""
        lines = []
        if hostfwd_port:
            lines.append(f"ssh -p {hostfwd_port} -o StrictHostKeyChecking=no "
                         f"-o UserKnownHostsFile=/dev/null {self.user}@127.0.0.1{via}")
            if self.password_file:
                lines.append(f"    password: in {self.password_file} (mode 0600)")
            else:
                lines.append(_IN_MEMORY if self.generated else "    password: the cfg's login")
        if self.vnc_display is not None:
            lines.append(f"vncviewer {self.vnc_where}   # VNC display {self.vnc_display}{via}")
            lines.append(f"    password: in {self.vnc_password_file} (mode 0600)"
                         if self.vnc_password_file else _IN_MEMORY)
        return lines


__all__ = ["GUEST_PASSWORD_FILE", "VNC_PASSWORD_FILE", "VNC_PORT_BASE", "Access"]
