"""The shape of a VM: what must match for a snapshot of one VM to restore as another (pure).

A snapshot (see ``runtime/snapshot.py``) may be restored by a new qemu only with the same
binary and version, the same argv apart from per-instance host-side values (the run dir's
sockets and logs, the hostfwd port, the VNC display), the same kernel/initrd/disk contents
and the same guest image. :func:`fingerprint` hashes exactly that; :func:`restore_blocker`
names what makes a VM unsafe to restore at all.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence

#: the device that gives every start a new VM generation id: a restored Linux guest
#: reseeds its RNG when the id changes (drivers/virt/vmgenid.c)
VMGENID = ["-device", "vmgenid,guid=auto"]

#: a restorable VM's stream carries no run state: a restore then runs the guest as soon as
#: the stream is loaded (or on ``cont`` sent during the load when ``-S`` holds it for vCPU
#: pinning) instead of restoring the saved "paused" state and waiting for a ``cont``
#: after polling for the end of the load
NO_GLOBAL_STATE = ["-global", "migration.store-global-state=off"]

_VNC = re.compile(r"^(?:[^,]*):\d+(,|$)")
_HOSTFWD_PORT = re.compile(r"(hostfwd=tcp:[^:]*:)\d+-")
_SOCKET_PATH = re.compile(r"(^|,)path=[^,]*")


def normalize_argv(argv: Sequence[str], run_dir: str) -> list[str]:
    """``argv`` with per-instance values replaced: the run dir by ``<run>``, a hostfwd
    host port by ``<port>``, a VNC display by ``<vnc>``, the path of a socket chardev by
    ``<sock>`` (host side only: a vhost-user backend restarted per test on a new socket
    serves a restored guest as well)."""
    out: list[str] = []
    prev = ""
    run = run_dir.rstrip("/")
    for arg in argv:
        a = arg.replace(run, "<run>") if run else arg
        a = _HOSTFWD_PORT.sub(r"\1<port>-", a)
        if prev == "-vnc":
            a = _VNC.sub(r"<vnc>\1", a)
        elif prev == "-chardev" and a.startswith("socket,"):
            a = _SOCKET_PATH.sub(r"\1path=<sock>", a)  # host side: a backend's new socket
        out.append(a)
        prev = arg
    return out


def image_paths(argv: Sequence[str]) -> list[str]:
    """The kernel, initrd and disk image files ``argv`` reads (``-kernel``, ``-initrd``,
    ``-drive file=...``, ``-hda``...)."""
    paths: list[str] = []
    for flag, value in itertools.pairwise(argv):
        if flag in ("-kernel", "-initrd", "-hda", "-hdb", "-cdrom", "-bios"):
            paths.append(value)
        elif flag in ("-drive", "-blockdev"):
            for part in value.split(","):
                key, _, val = part.partition("=")
                if key in ("file", "filename") and val:
                    paths.append(val)
    return paths


def restore_blocker(argv: Sequence[str], usercmd: Sequence[str] = (),
                    run_dir: str = "") -> str | None:
    """Why a VM with ``argv`` must boot cold instead of restoring, or None. A disk in
    ``run_dir`` is the VM's own overlay (see ``qemu/overlay.py``)."""
    joined = " ".join(argv)
    if "vfio-pci" in joined:
        return "it passes a host device through (vfio-pci): device state cannot be restored"
    if "vhost-cuse" in joined or re.search(r"\bscript=(?!no\b)", joined):
        return "it uses a tap/vhost-cuse device with a host script the runtime cannot replay"
    if "-daemonize" in argv:
        return "qemu daemonizes ('daemon' in the cfg)"
    if "-incoming" in argv:
        return ("it is a live migration target (the cfg's 'migration'): its state comes "
                "from the source")
    if usercmd:
        return "the cfg adds 'usercmd' words the runtime cannot reason about"
    for flag, value in itertools.pairwise(argv):
        private = bool(run_dir) and value.startswith(f"file={run_dir.rstrip('/')}/")
        if flag == "-drive" and not private and not re.search(
                r"(^|,)(snapshot|readonly)=on(,|$)", value):
            return ("a disk is writable (no snapshot=on): a restored guest's page cache "
                    "would not match what earlier tests wrote to it")
    if re.search(r"(^|,)snapshot=on(,|$)", joined) or "-snapshot" in argv:
        return ("a disk is opened with snapshot=on: its temporary overlay is not part of "
                "the migration stream")
    return None


#: oldest qemu whose file migration and ``vmgenid`` this runtime relies on
MIN_QEMU = (5, 0)


def version_blocker(version_line: str) -> str | None:
    """Why a qemu (its ``--version`` first line) is too old to restore, or None."""
    found = re.search(r"version (\d+)\.(\d+)", version_line)
    if found is None:
        return f"the qemu version is unknown ({version_line.strip()!r})"
    if (int(found.group(1)), int(found.group(2))) < MIN_QEMU:
        return (f"qemu {found.group(1)}.{found.group(2)} is older than "
                f"{MIN_QEMU[0]}.{MIN_QEMU[1]}, which snapshots need")
    return None


def fingerprint(qemu_version: str, argv: Sequence[str], run_dir: str,
                image_hashes: Mapping[str, str], image_key: str = "") -> str:
    """A short hex digest of everything that must match for a restore."""
    doc = {"qemu": qemu_version.strip(), "argv": normalize_argv(argv, run_dir),
           "images": dict(sorted(image_hashes.items())), "image_key": image_key}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


__all__ = ["MIN_QEMU", "VMGENID", "fingerprint", "image_paths", "normalize_argv", "restore_blocker",
           "version_blocker"]
