"""The DTS compatibility layer: legacy names on the plugin's API, so a legacy VM suite runs
with a handful of edits (see docs/porting.md).

- :class:`TestCase` (``set_up_all``/``set_up``/``tear_down``/``tear_down_all`` as pytest
  fixtures, ``self.dut``, ``self.verify``, ``self.logger``, ``self.suite_name``,
  ``self.get_suite_cfg()``);
- :func:`VM` / :class:`QEMUKvm` (``start(load_config=, set_target=, bind_dev=)``,
  ``load_config()``, ``params``, ``qemu_emulator``, ``hostfwd_addr``, ``pci_maps``), on the
  plugin's factory inside pytest;
- :class:`PmdOutput` (``start_testpmd``, ``execute_cmd``, ``get_output``, ``quit``,
  ``get_pmd_stats``, ``get_port_mac``, ...) and :class:`VhostUserPmd`/
  :func:`vhost_user_vdevs` for vhost-user backends with per-port devargs;
- the legacy DUT names live on every ``Dut``/``VmDut`` itself (``send_expect("^c", ...)``,
  ``alt_session``, ``verify``, ``new_session``, ``get_session_before``, ``base_dir``,
  ``get_core_list``, ``create_eal_parameters``, ``apps_name``, ``build_dpdk_apps``).
"""

from __future__ import annotations

from pytest_dtsvirt.compat.pmd_output import (
    PmdOutput,
    VhostUserPmd,
    parse_pmd_stats,
    vhost_user_vdevs,
)
from pytest_dtsvirt.compat.suitecfg import load_suite_cfg
from pytest_dtsvirt.compat.testcase import TestCase, VerifyFailure
from pytest_dtsvirt.compat.vm import VM, LegacyVM, QEMUKvm
from pytest_dtsvirt.errors import CompatWarning, VerifyError

__all__ = ["VM", "CompatWarning", "LegacyVM", "PmdOutput", "QEMUKvm", "TestCase",
           "VerifyError", "VerifyFailure", "VhostUserPmd", "load_suite_cfg", "parse_pmd_stats",
           "vhost_user_vdevs"]
