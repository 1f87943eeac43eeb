"""Legacy configs load with the legacy parser's entries: our own configs of each legacy
idiom (``tests/configs``) always, the corpus of real DTS configs when ``DTSVIRT_CORPUS_DIR``
names it (``tests/support/corpus.py``; CI always does).

The comparison with the legacy parser (``tests/legacy_cfg.py``) normalises exactly the
traps the README's "Fixes to the legacy parser" lists, each one named, and pins which traps
each file hits, so a new difference shows up as a failure instead of being normalised away
silently.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from legacy_cfg import legacy_params, legacy_raw_items, load_param
from support.corpus import OWN, corpus_dir, corpus_files, needs_corpus

from pytest_dtsvirt.config.cfgfile import Entry, Section, read_cfg

FILES = corpus_files()
OWN_FILES = sorted(OWN.glob("*.cfg"))


def _rel(path: Path) -> str:
    for root, tag in ((OWN, "own/"), (corpus_dir() if FILES else None, "")):
        if root is not None and path.is_relative_to(root):
            return tag + path.relative_to(root).as_posix()
    return str(path)


@needs_corpus
def test_corpus_is_present() -> None:
    corpus_dir()
    rels = {_rel(p) for p in FILES}
    for where in ("", "scene/", "doc-era-dcb6c98f/", "doc-era-dcb6c98f/scene/"):
        assert any(r.startswith(where) and "/" not in r[len(where):] for r in rels), where
    assert len(FILES) >= 50


# -- the named normalisations: legacy result -> what our reader deliberately gives ---------

LINEBREAK = "line break ends an entry"  # legacy split only at ';', merging lines
EMPTY_ENTRY = "empty entries skipped"  # legacy removed only the first '' entry
WHITESPACE = "whitespace around option names/values stripped"
EMPTY_TOKEN = "empty tokens skipped"  # trailing comma: legacy key '' with value ''
BARE = "bare tokens kept apart"  # ours: Entry.bare; legacy: {token: ''}


def _legacy_normalised(value: str, traps: set[str]) -> list[dict[str, str]]:
    """Split a raw value as legacy did, then undo each documented trap (recording it)."""
    confs = [c.strip() for c in value.split(";")]
    split_lines = [c.strip() for c in value.replace("\n", ";").split(";")]
    if [c for c in split_lines if c] != [c for c in confs if c]:
        traps.add(LINEBREAK)
    if confs.count("") > 1 or (LINEBREAK in traps and split_lines.count("") > 1):
        traps.add(EMPTY_ENTRY)
    out = []
    for conf in (c for c in split_lines if c):
        raw = load_param(conf)
        entry: dict[str, str] = {}
        for key, val in raw.items():
            if (key, val) != (key.strip(), val.strip()):
                traps.add(WHITESPACE)
            if key.strip() == "" and val.strip() == "":
                traps.add(EMPTY_TOKEN)
                continue
            entry[key.strip()] = val.strip()
        if entry:
            out.append(entry)
    return out


def _ours_as_legacy(entry: Entry, traps: set[str]) -> dict[str, str]:
    d = entry.as_dict()
    for tok in entry.bare:
        traps.add(BARE)
        k, _, v = tok.partition("=")
        d[k.strip()] = v.strip()
    return d


def _compare(section: Section, legacy: list[tuple[str, str]]) -> set[str]:
    traps: set[str] = set()
    assert [p.key for p in section.params] == [k for k, _ in legacy]
    for param, (_, value) in zip(section.params, legacy, strict=True):
        ours = [_ours_as_legacy(e, traps) for e in param.entries]
        assert ours == _legacy_normalised(value, traps), (section.name, param.key)
    return traps


# Which traps each file hits (file -> {section: traps}). Files not listed hit none: for them
# our as_params() is exactly the legacy result. "own/" files are ours (tests/configs).
EXPECTED_TRAPS: dict[str, dict[str, set[str]]] = {
    "own/legacy_idioms.cfg": {
        "vm0": {BARE, EMPTY_TOKEN},  # cpupin=4,5,6,7 and file=...,;
        "vm1": {EMPTY_ENTRY, WHITESPACE, LINEBREAK},  # path=...;; and model=host, number=2
        "suite": {BARE, WHITESPACE},  # python literals: packet_sizes = [64, 128, 256]
        "test_case_one": {BARE, WHITESPACE},
        "mount_info": {BARE},  # host_share_dir=/home/vm-image (one token, no entries)
    },
    "basic_4k_pages_cbdma.cfg": {"suite": {BARE, WHITESPACE}},
    "port_control.cfg": {"vm0": {EMPTY_TOKEN}},
    "power_branch_ratio.cfg": {"suite": {BARE, WHITESPACE}},
    "pvp_diff_qemu_version.cfg": {"suite": {BARE, WHITESPACE, LINEBREAK, EMPTY_TOKEN}},
    "pvp_qemu_multi_paths_port_restart.cfg": {"suite": {BARE, WHITESPACE, LINEBREAK, EMPTY_TOKEN}},
    "vf_etag.cfg": {"vm0": {BARE}},
    "vhost_user_live_migration.cfg": {"mount_info": {BARE}},
    "virtio_ipsec_cryptodev_func.cfg": {"suite": {BARE}},
    "virtio_perf_cryptodev_func.cfg": {
        "suite": {BARE},
        "test_aesni_mb_aes_cbc_sha1_hmac": {BARE},
        "test_virtio_aes_cbc_sha1_hmac": {BARE},
    },
    "virtio_unit_cryptodev_func.cfg": {"suite": {BARE}},
}


def _files() -> list[object]:
    corpus = ([pytest.param(p, id=_rel(p)) for p in FILES]
              or [pytest.param(None, id="corpus", marks=needs_corpus)])
    return [*(pytest.param(p, id=_rel(p)) for p in OWN_FILES), *corpus]


@pytest.mark.parametrize("path", _files())
def test_file_matches_legacy(path: Path) -> None:
    cfg = read_cfg(path)
    text = path.read_text()
    legacy_exact = legacy_params(text)
    legacy_raw = legacy_raw_items(text)
    assert list(cfg.names()) == list(legacy_raw), "same sections in the same order"
    hit: dict[str, set[str]] = {}
    for section in cfg.sections:
        assert dict(section.raw) == dict(legacy_raw[section.name]), "raw text as ConfigParser"
        traps = _compare(section, legacy_raw[section.name])
        if traps:
            hit[section.name] = traps
        else:
            assert section.as_params() == legacy_exact[section.name]
    assert hit == EXPECTED_TRAPS.get(_rel(path), {})


@pytest.mark.parametrize(("root", "rel"), [
    pytest.param(OWN, "vxlan_sample.cfg", id="own"),
    pytest.param(None, "vxlan_sample.cfg", id="corpus", marks=needs_corpus),
    pytest.param(None, "doc-era-dcb6c98f/vxlan_sample.cfg", id="corpus-doc-era",
                 marks=needs_corpus),
])
def test_reference_vxlan_params(root: Path | None, rel: str) -> None:
    """The file part of the reference's "Add Parameters" list for vxlan_sample.cfg [vm0]."""
    vm0 = read_cfg((root or corpus_dir()) / rel).section("vm0")
    assert vm0.as_params() == [
        {"cpu": [{"model": "host", "number": "4", "cpupin": "24 25 26 27"}]},
        {"mem": [{"hugepage": "yes", "size": "4096"}]},
        {"disk": [{"file": "/storage/vm-image/vm0.img"}]},
        {"login": [{"password": "tester", "user": "root"}]},
        {"vnc": [{"displayNum": "1"}]},
    ]
    assert vm0.line == 2
    assert [(p.key, p.line, p.entries[0].line) for p in vm0.params] == [
        ("cpu", 3, 4), ("mem", 5, 6), ("disk", 7, 8), ("login", 9, 10), ("vnc", 11, 12),
    ]


@pytest.mark.parametrize(("root", "name", "line"), [
    pytest.param(OWN, "legacy_idioms.cfg", 10, id="own"),
    pytest.param(None, "vf_pf_reset.cfg", 6, id="corpus", marks=needs_corpus),
])
def test_comment_inside_value_is_skipped(root: Path | None, name: str, line: int) -> None:
    """A mem entry commented out inside a multi-line value (as vf_pf_reset.cfg does)."""
    mem = read_cfg((root or corpus_dir()) / name).section("vm0").param("mem")
    assert mem is not None
    assert [(e.as_dict(), e.line) for e in mem.entries] == [({"size": "8192"}, line)]
