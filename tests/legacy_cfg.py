"""A faithful Python-3 re-implementation of the legacy DTS suite config parser.

Legacy DTS (``framework/config.py``: ``UserConf.load_section`` / ``load_config`` /
``load_param`` and ``VirtConf.load_virt_config``) read a suite config with the stdlib
``SafeConfigParser`` (Python 3: ``configparser.ConfigParser()``: BasicInterpolation, keys
lowercased, ``[DEFAULT]`` items in every section, strict duplicates) and then split each
value with three string operations. This module reproduces exactly that, traps included,
so the tests can show where the new reader keeps and where it deliberately changes legacy
results. Test-only code: it is never imported by the package.
"""

from __future__ import annotations

import configparser

LegacyParams = list[dict[str, list[dict[str, str]]]]


def legacy_items(text: str) -> dict[str, list[tuple[str, str]]]:
    """``{section: conf.items(section)}`` for every section, as legacy DTS saw them."""
    conf = configparser.ConfigParser()
    conf.read_string(text)
    return {name: conf.items(name) for name in conf.sections()}


def legacy_raw_items(text: str) -> dict[str, list[tuple[str, str]]]:
    """Like :func:`legacy_items` without interpolation (the raw value text)."""
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_string(text)
    return {name: conf.items(name) for name in conf.sections()}


def load_config(item: str) -> list[str]:
    """Legacy ``UserConf.load_config``: split a value into entries at ``;``."""
    confs = [conf.strip() for conf in item.split(";")]
    if "" in confs:
        confs.remove("")  # removes only the FIRST empty string (legacy behaviour)
    return confs


def load_param(conf: str) -> dict[str, str]:
    """Legacy ``UserConf.load_param``: split one entry into options."""
    param_dict: dict[str, str] = {}
    for param in conf.split(","):
        (key, _, value) = param.partition("=")
        param_dict[key] = value
    return param_dict


def split_value(value: str) -> list[dict[str, str]]:
    """One key's value -> the legacy list of option dicts."""
    return [load_param(conf) for conf in load_config(value)]


def legacy_params(text: str) -> dict[str, LegacyParams]:
    """``{section: [{key: [{opt: value}, ...]}, ...]}`` exactly as legacy DTS built it."""
    return {
        name: [{key: split_value(value)} for key, value in items]
        for name, items in legacy_items(text).items()
    }
