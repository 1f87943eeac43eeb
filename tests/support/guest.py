"""Boot the project's test guest with a plain qemu argv (for tests and the benchmark).

This is deliberately independent of the real argv builder and QGA client: it checks the
guest image itself. Every qemu started here is ended by PID.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import paramiko

from pytest_dtsvirt.guest import GuestImage, ensure_guest_image

MAC = "52:54:00:12:34:56"
PROFILES = ("fast", "plain", "disk")


_IMAGE: list[GuestImage] = []


def session_image() -> GuestImage:
    """The default test guest from the default cache (built on first use, once per process)."""
    if not _IMAGE:
        import logging
        log = logging.getLogger("dtsvirt.guest")
        _IMAGE.append(ensure_guest_image(progress=log.info))
    return _IMAGE[0]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (best effort; qemu fails loudly on a collision)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def qemu_argv(image: GuestImage, profile: str, run_dir: str, ssh_port: int, *,
              mac: str = MAC, extra: Sequence[str] = (), cpu: str | None = None,
              smp: int | None = None, mem: int = 512, append: str = "") -> list[str]:
    """A plain qemu command line for the guest; "fast" or "plain" boot profile.

    ``cpu``/``smp`` replace the profile's, ``append`` is added to the kernel command line.
    """
    if profile == "fast":
        boot = ["-kernel", image.vmlinux, "-cpu", "qemu64,+rdrand", "-smp", "1"]
        nic = f"e1000,netdev=n0,addr=1f,mac={mac},autonegotiation=off,romfile="
    elif profile == "plain":
        boot = ["-kernel", image.kernel, "-cpu", "qemu64", "-smp", "2"]
        nic = f"e1000,netdev=n0,addr=1f,mac={mac}"
    elif profile == "disk":  # the bootable disk (SYSLINUX), no -kernel
        if image.disk is None:
            raise ValueError("image built without disk=True")
        boot = ["-drive", f"file={image.disk},format=qcow2,if=virtio,snapshot=on",
                "-cpu", "qemu64,+rdrand", "-smp", "1"]
        nic = f"e1000,netdev=n0,addr=1f,mac={mac},autonegotiation=off,romfile="
    else:
        raise ValueError(profile)
    if cpu is not None:
        boot[boot.index("-cpu") + 1] = cpu
    if smp is not None:
        boot[boot.index("-smp") + 1] = str(smp)
    if profile != "disk":
        boot += ["-initrd", image.initrd, "-append", f"{image.append} {append}".strip()]
    return [
        "qemu-system-x86_64", "-accel", "tcg", "-m", str(mem), "-nodefaults", "-no-user-config",
        "-display", "none", "-no-reboot", *boot,
        "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", nic,
        "-chardev", f"socket,id=qga0,path={run_dir}/qga.sock,server=on,wait=off",
        "-device", "virtio-serial-pci,id=vser0",
        "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        "-serial", f"file:{run_dir}/console.log",
        *extra,
    ]


@dataclass
class Vm:
    """A running qemu with the guest; ``t0`` is the monotonic time qemu was started."""

    proc: subprocess.Popen[bytes]
    run_dir: str
    ssh_port: int
    argv: list[str]
    t0: float
    clients: list[paramiko.SSHClient] = field(default_factory=list)
    #: root's password, set through the agent by set_password() (the image has none)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    password_set: bool = False

    @property
    def qga_path(self) -> str:
        return os.path.join(self.run_dir, "qga.sock")

    def console(self) -> str:
        try:
            with open(os.path.join(self.run_dir, "console.log"), errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def stderr(self) -> str:
        try:
            with open(os.path.join(self.run_dir, "qemu.err"), errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"qemu exited {self.proc.returncode}: {self.stderr()}\n"
                               f"console:\n{self.console()[-3000:]}")


@contextlib.contextmanager
def booted(image: GuestImage, profile: str = "fast", *, mac: str = MAC,
           extra: Sequence[str] = (), **boot: Any) -> Iterator[Vm]:
    """Start qemu with the guest; on exit close SSH clients, kill qemu by PID, remove files."""
    run_dir = tempfile.mkdtemp(prefix="dtsvirt-guest-")
    os.chmod(run_dir, 0o700)
    port = free_port()
    argv = qemu_argv(image, profile, run_dir, port, mac=mac, extra=extra, **boot)
    with open(os.path.join(run_dir, "qemu.err"), "wb") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    vm = Vm(proc, run_dir, port, argv, t0)
    try:
        yield vm
    finally:
        for c in vm.clients:
            c.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(run_dir, ignore_errors=True)


def qga(path: str, command: str, arguments: dict[str, Any] | None = None,
        timeout: float = 30.0) -> Any:
    """One QGA command over the unix socket, synced with guest-sync-delimited.

    Returns the ``return`` value; ``guest-shutdown`` returns None without waiting.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        while True:
            try:
                s.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        sync_id = random.randint(1, 2**31)
        s.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited",
                                         "arguments": {"id": sync_id}}).encode() + b"\n")
        buf = b""
        synced = False
        while not synced:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError("qga socket closed while syncing")
            buf += chunk
            if b"\xff" not in buf:
                continue
            tail = buf[buf.rindex(b"\xff") + 1:]
            for line in tail.split(b"\n")[:-1]:
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("return") == sync_id:
                        synced = True
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        s.sendall(json.dumps(msg).encode() + b"\n")
        if command == "guest-shutdown":
            return None
        buf = b""
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError(f"qga socket closed waiting for {command}")
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    reply = json.loads(line)
                except ValueError:
                    continue
                if "error" in reply:
                    raise RuntimeError(f"{command}: {reply['error']}")
                if "return" in reply and reply["return"] != sync_id:
                    return reply["return"]


def interfaces(vm: Vm) -> dict[str, dict[str, Any]]:
    """guest-network-get-interfaces as name -> {mac, ipv4: [...]}."""
    out = {}
    for itf in qga(vm.qga_path, "guest-network-get-interfaces"):
        out[itf["name"]] = {
            "mac": itf.get("hardware-address"),
            "ipv4": [a["ip-address"] for a in itf.get("ip-addresses", [])
                     if a.get("ip-address-type") == "ipv4"],
        }
    return out


def wait_host_connect(vm: Vm, timeout: float = 60.0) -> dict[str, Any]:
    """Poll the agent until host_connect has an IPv4 address; return its entry."""
    deadline = time.monotonic() + timeout
    while True:
        vm.check_alive()
        itfs = interfaces(vm)
        hc = itfs.get("host_connect")
        if hc and hc["ipv4"]:
            return hc
        if time.monotonic() > deadline:
            raise TimeoutError(f"host_connect has no IPv4 address: {itfs}")
        time.sleep(0.05)


def set_password(vm: Vm, timeout: float = 60.0) -> str:
    """Set root's password (``vm.password``) through the agent, as the framework does: the
    image has no usable root password. Returns it."""
    if not vm.password_set:
        deadline = time.monotonic() + timeout
        while True:
            vm.check_alive()
            try:
                qga(vm.qga_path, "guest-set-user-password",
                    {"username": "root", "crypted": False,
                     "password": base64.b64encode(vm.password.encode()).decode()},
                    timeout=max(1.0, min(5.0, deadline - time.monotonic())))
                break
            except (OSError, EOFError):  # the agent is not up yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        vm.password_set = True
    return vm.password


def ssh(vm: Vm, timeout: float = 60.0) -> paramiko.SSHClient:
    """Log in as root through the hostfwd port (after setting its password through the
    agent), retrying until the server answers."""
    deadline = time.monotonic() + timeout
    set_password(vm, timeout)
    while True:
        vm.check_alive()
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            # short timeouts: a connection made before the guest has its address stalls in
            # slirp's SYN retransmits; a fresh one gets through at once
            client.connect("127.0.0.1", vm.ssh_port, "root", vm.password, timeout=2,
                           banner_timeout=2, auth_timeout=5, allow_agent=False,
                           look_for_keys=False)
        except (OSError, paramiko.SSHException, EOFError):
            client.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            continue
        vm.clients.append(client)
        return client


def run(client: paramiko.SSHClient, command: str, timeout: float = 30.0) -> tuple[int, str]:
    """Run a command over SSH; (exit status, stdout+stderr)."""
    _, out, err = client.exec_command(command, timeout=timeout)
    text = out.read().decode(errors="replace") + err.read().decode(errors="replace")
    return out.channel.recv_exit_status(), text
