"""Legacy ``framework.config.UserConf`` and ``framework.settings.CONFIG_ROOT_PATH`` for the
non-VM sections suites read themselves (``[mount_info]``, ...): a raw ConfigParser, no
interpolation, nothing evaluated."""

from __future__ import annotations

import configparser
import os

from pytest_dtsvirt.compat import context

#: where legacy suites find ``<suite>.cfg`` (``$DTSVIRT_CONF_DIR``, default ``conf``)
CONFIG_ROOT_PATH = os.environ.get("DTSVIRT_CONF_DIR", "conf")


class UserConf:
    """Legacy ``UserConf(path)``: ``conf`` is the file read by a ConfigParser (raw values);
    ``load_section(name)`` its items. A missing file is a FileNotFoundError naming it.
    Inside a :class:`~pytest_dtsvirt.compat.TestCase`, a path below ``CONFIG_ROOT_PATH`` is
    read from the suite's conf dir (the one its VMs use), not the current directory's."""

    def __init__(self, path: str) -> None:
        path = context.conf_path(path, CONFIG_ROOT_PATH)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
        self.path = path
        self.conf = configparser.ConfigParser(interpolation=None)
        self.conf.read(path)

    def get_sections(self) -> list[str]:
        return self.conf.sections()

    def load_section(self, section: str) -> list[tuple[str, str]]:
        return list(self.conf.items(section)) if self.conf.has_section(section) else []
