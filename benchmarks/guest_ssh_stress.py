"""One guest SSH session under concurrent load: commands from several threads, shells opening.

Usage: python benchmarks/guest_ssh_stress.py [--threads N] [--seconds S] [--shells K]
       [--ssh dropbear|openssh]

Boots the test guest (plain qemu argv, tests/support/guest.py) and, on one SshSession, runs
``echo x`` back to back from N threads while another thread opens and closes K shells (or
just waits S seconds when K is 0). Prints the commands and shells done, how often the server
closed a new channel before starting it (retried: dropbear 2022.83 does this whenever another
command of the connection ends at that moment), the errors, and whether the connection was
lost. Not a test: it measures how the session copes with a busy guest.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from support.guest import booted, ssh

from pytest_dtsvirt.guest import DEFAULT_SSH, SSH_SERVERS, ensure_guest_image
from pytest_dtsvirt.session.local import LocalSession
from pytest_dtsvirt.session.ssh import SshSession


class _CountRetries(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "closed a new channel" in record.getMessage():
            self.retries += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=5, help="command threads (default 5)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="duration when --shells is 0 (default 60)")
    parser.add_argument("--shells", type=int, default=0, help="shells to open and close")
    parser.add_argument("--ssh", choices=SSH_SERVERS, default=DEFAULT_SSH,
                        help=f"SSH server of the guest (default {DEFAULT_SSH})")
    args = parser.parse_args()
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # the wait for sshd's banner
    counter = _CountRetries()
    channel_log = logging.getLogger("pytest_dtsvirt.session.channel")
    channel_log.setLevel(logging.INFO)
    channel_log.addHandler(counter)
    counts = {"commands": 0, "shells": 0}
    errors: list[str] = []
    stop = threading.Event()
    with booted(ensure_guest_image(ssh=args.ssh)) as vm, LocalSession() as host:
        ssh(vm).close()  # waits until the guest's SSH server answers
        session = SshSession.for_guest(name="vm0", user="root", password=vm.password,
                                       sock=host.open_tcp("127.0.0.1", vm.ssh_port))

        def commands() -> None:
            while not stop.is_set():
                try:
                    result = session.run(["sh", "-c", "echo x"], timeout=30)
                    if result.stdout != "x\n":
                        errors.append(f"command: unexpected {result!r}")
                    counts["commands"] += 1
                except Exception as exc:  # counted, and the thread goes on unless it is lost
                    errors.append(f"command: {exc}")
                    if "lost" in str(exc):
                        return

        def shells() -> None:
            if args.shells == 0:
                stop.wait(args.seconds)
            for _ in range(args.shells):
                try:
                    session.shell().close()
                    counts["shells"] += 1
                except Exception as exc:
                    errors.append(f"shell: {exc}")
                    if "lost" in str(exc):
                        return

        start = time.monotonic()
        workers = [threading.Thread(target=commands) for _ in range(args.threads)]
        for w in workers:
            w.start()
        shells()
        stop.set()
        for w in workers:
            w.join()
        took = time.monotonic() - start
        session.close()
    lost = any("lost" in e for e in errors)
    print(f"{args.ssh}, {args.threads} threads, {took:.1f} s: {counts['commands']} commands, "
          f"{counts['shells']} shells, {counter.retries} early-closed channels retried, "
          f"{len(errors)} errors, connection {'LOST' if lost else 'kept'}")
    for line in sorted(set(errors))[:5]:
        print(f"  {line}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
