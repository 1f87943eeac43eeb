"""Golden tests of the DTS suite config reader (the README's "Fixes to the legacy parser").

Each trap fix is its own test and shows the legacy result (tests/legacy_cfg.py, the legacy
parser re-implemented) next to ours. Property tests at the end.
"""

from __future__ import annotations

import builtins
import configparser
import contextlib
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from legacy_cfg import legacy_params, legacy_raw_items

from pytest_dtsvirt.config.cfgfile import CfgFile, Entry, parse_cfg, read_cfg
from pytest_dtsvirt.errors import ConfigError, Location


def cfg(text: str) -> CfgFile:
    return parse_cfg(textwrap.dedent(text).lstrip("\n"), "t.cfg")


def legacy(text: str) -> dict[str, Any]:
    return legacy_params(textwrap.dedent(text).lstrip("\n"))


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        cfg(text)
    return info.value


# -- the basics: same as legacy -----------------------------------------------------------

VXLAN = """
    # vm configuration
    [vm0]
    cpu =
        model=host,number=4,cpupin=24 25 26 27;
    mem =
        size=4096,hugepage=yes;
    vnc =
        displayNum=1;
    """


def test_basic_file_matches_legacy_with_lines() -> None:
    vm0 = cfg(VXLAN).section("vm0")
    assert vm0.as_params() == legacy(VXLAN)["vm0"] == [
        {"cpu": [{"model": "host", "number": "4", "cpupin": "24 25 26 27"}]},
        {"mem": [{"size": "4096", "hugepage": "yes"}]},
        {"vnc": [{"displayNum": "1"}]},  # option names keep their case
    ]
    assert vm0.line == 2
    assert [(p.key, p.line, [e.line for e in p.entries]) for p in vm0.params] == [
        ("cpu", 3, [4]), ("mem", 5, [6]), ("vnc", 7, [8]),
    ]


def test_several_entries_and_first_equals_splits() -> None:
    text = """
    [vm0]
    net = type=nic,opt_vlan=0; type=user,opt_hostfwd=tcp:127.0.0.1:6000-:22;
    qemu =
        path=/a=b;
        path=/c;
    monitor = port=;
    """
    ours = cfg(text).section("vm0").as_params()
    assert ours == legacy(text)["vm0"]
    assert ours[0]["net"][1]["opt_hostfwd"] == "tcp:127.0.0.1:6000-:22"
    assert ours[1] == {"qemu": [{"path": "/a=b"}, {"path": "/c"}]}
    assert ours[2] == {"monitor": [{"port": ""}]}  # an option with an empty value is kept


def test_empty_value_gives_no_entries() -> None:
    text = "[vm0]\nqga =\ndaemon = enable=yes;\n"
    assert parse_cfg(text).section("vm0").as_params() == legacy_params(text)["vm0"] == [
        {"qga": []}, {"daemon": [{"enable": "yes"}]},
    ]


# -- trap fixes: each shows legacy vs ours -----------------------------------------------

def test_trap_line_break_ends_an_entry() -> None:
    """The reference's own two-line ``device =`` example (no ``;``) means two devices."""
    text = """
    [vm0]
    device =
    \t    driver=vhost-user,opt_path=./vhost-net,opt_mac=00:00:20:00:00:20
            driver=vhost-user,opt_path=./vhost-net,opt_mac=00:00:20:00:00:21
    """
    assert legacy(text)["vm0"] == [  # legacy: one device, the first one silently lost
        {"device": [{"driver": "vhost-user", "opt_path": "./vhost-net",
                     "opt_mac": "00:00:20:00:00:21"}]},
    ]
    device = cfg(text).section("vm0").params[0]
    assert [(e.as_dict(), e.line) for e in device.entries] == [
        ({"driver": "vhost-user", "opt_path": "./vhost-net", "opt_mac": "00:00:20:00:00:20"}, 3),
        ({"driver": "vhost-user", "opt_path": "./vhost-net", "opt_mac": "00:00:20:00:00:21"}, 4),
    ]


def test_trap_whitespace_around_names_and_values_is_stripped() -> None:
    text = "[vm0]\ncpu = model=host, number=2 ; model = core2duo\n"
    assert legacy_params(text)["vm0"] == [
        {"cpu": [{"model": "host", " number": "2"}, {"model ": " core2duo"}]},
    ]
    assert parse_cfg(text).section("vm0").as_params() == [
        {"cpu": [{"model": "host", "number": "2"}, {"model": "core2duo"}]},
    ]


def test_trap_percent_is_literal() -> None:
    text = "[vm0]\nlogin = user=root,password=50%off;\nx = a=%%;\ny = a=%(x)s;\n"
    with pytest.raises(configparser.InterpolationSyntaxError):
        legacy_params(text)
    ok = "[vm0]\nx = a=%%;\nk = b\ny = a=%(k)s;\n"
    assert legacy_params(ok)["vm0"] == [
        {"x": [{"a": "%"}]}, {"k": [{"b": ""}]}, {"y": [{"a": "b"}]},
    ]
    ours = parse_cfg(text).section("vm0")
    assert ours.as_params() == [
        {"login": [{"user": "root", "password": "50%off"}]},
        {"x": [{"a": "%%"}]},
        {"y": [{"a": "%(x)s"}]},
    ]
    assert ours.raw["y"] == "a=%(x)s;"


def test_trap_empty_entries_are_skipped() -> None:
    text = "[vm0]\ndisk = file=/a.img;;\nmem = size=1;;;\n"
    assert legacy_params(text)["vm0"] == [  # legacy removed only the FIRST empty entry
        {"disk": [{"file": "/a.img"}, {"": ""}]},
        {"mem": [{"size": "1"}, {"": ""}, {"": ""}]},
    ]
    assert parse_cfg(text).section("vm0").as_params() == [
        {"disk": [{"file": "/a.img"}]}, {"mem": [{"size": "1"}]},
    ]


def test_trap_empty_tokens_are_skipped() -> None:
    text = "[vm0]\ndisk =\n    file=/home/osimg/centos7-6.img,;\nmem = ,size=1,,;\n"
    assert legacy_params(text)["vm0"] == [
        {"disk": [{"file": "/home/osimg/centos7-6.img", "": ""}]},
        {"mem": [{"": "", "size": "1"}]},
    ]
    vm0 = parse_cfg(text).section("vm0")
    assert vm0.as_params() == [
        {"disk": [{"file": "/home/osimg/centos7-6.img"}]}, {"mem": [{"size": "1"}]},
    ]
    assert all(e.bare == () for p in vm0.params for e in p.entries)


def test_trap_bare_tokens_are_kept_apart_for_the_model() -> None:
    text = '[vm0]\ncpu = model=host,number=4,cpupin=4,5,6,7;\n[suite]\ncrypto_dev_id = "37c9"\n'
    legacy_result = legacy_params(text)
    assert legacy_result["vm0"] == [
        {"cpu": [{"model": "host", "number": "4", "cpupin": "4", "5": "", "6": "", "7": ""}]},
    ]
    assert legacy_result["suite"] == [{"crypto_dev_id": [{'"37c9"': ""}]}]
    ours = parse_cfg(text)
    (cpu,) = ours.section("vm0").params[0].entries
    assert cpu == Entry({"model": "host", "number": "4", "cpupin": "4"}, 2, ("5", "6", "7"))
    (dev,) = ours.section("suite").params[0].entries
    assert dev.options == {} and dev.bare == ('"37c9"',)
    assert ours.section("suite").raw == {"crypto_dev_id": '"37c9"'}


def test_token_without_a_name_is_bare() -> None:
    (entry,) = parse_cfg("[s]\nk = =x, a==b\n").section("s").params[0].entries
    assert legacy_params("[s]\nk = =x, a==b\n")["s"] == [{"k": [{"": "x", " a": "=b"}]}]
    assert entry.options == {"a": "=b"} and entry.bare == ("=x",)


def test_repeated_option_keeps_last_value_and_is_reported() -> None:
    text = "[vm0]\ncpu = number=1,number=2;\n"
    (entry,) = parse_cfg(text).section("vm0").params[0].entries
    assert legacy_params(text)["vm0"] == [{"cpu": [{"number": "2"}]}]
    assert entry.options == {"number": "2"} and entry.repeated == ("number",)


def test_values_are_never_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> None:
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    text = "[suite]\nx = __import__('os').system('false')\npacket_sizes = [64, 128]\n"
    suite = parse_cfg(text).section("suite")
    assert suite.raw == {"x": "__import__('os').system('false')", "packet_sizes": "[64, 128]"}


# -- ConfigParser behaviour kept -----------------------------------------------------------

def test_default_section_applies_to_every_section() -> None:
    text = """
    [DEFAULT]
    login = user=root,password=tester;
    mem = size=1024;
    [vm0]
    cpu = number=2;
    mem = size=2048;
    [vm1]
    """
    parsed = cfg(text)
    assert parsed.names() == ("vm0", "vm1")
    assert parsed.defaults is not None and parsed.defaults.line == 1
    for name in ("vm0", "vm1"):
        assert parsed.section(name).as_params() == legacy(text)[name]
    assert parsed.section("vm0").as_params() == [  # an overridden default keeps its place
        {"login": [{"user": "root", "password": "tester"}]},
        {"mem": [{"size": "2048"}]},
        {"cpu": [{"number": "2"}]},
    ]
    assert parsed.section("vm1").param("login") is not None
    assert parsed.section("vm1").location("t.cfg", "login").line == 2


def test_comments_full_line_only_also_inside_values() -> None:
    text = """
    # top comment
    ; also a comment
    [vm0]
    mem =
        #size=4096;
        ; size=1;
    # at column 0, the value goes on
        size=8192;
    cpu = model=host # not a comment ; number=2
    """
    ours = cfg(text).section("vm0")
    assert ours.as_params() == legacy(text)["vm0"] == [
        {"mem": [{"size": "8192"}]},
        {"cpu": [{"model": "host # not a comment"}, {"number": "2"}]},
    ]
    assert ours.params[0].entries[0].line == 8


def test_colon_delimiter_and_first_delimiter_wins() -> None:
    text = "[vm0]\ndisk: file=/a.img;\nmonitor = path=/tmp/m:1;\nurl:x=y\n"
    ours = parse_cfg(text).section("vm0")
    assert ours.as_params() == legacy_params(text)["vm0"]
    assert [p.key for p in ours.params] == ["disk", "monitor", "url"]
    assert ours.raw["url"] == "x=y"


def test_keys_are_lowercased_and_tabs_work() -> None:
    text = "[VM0]\nCPU\t=\tmodel=host;\nMem =\n\tsize=1;\n\t\thugepage=yes;\n"
    parsed = parse_cfg(text)
    assert parsed.names() == ("VM0",)  # section names stay case-sensitive
    vm0 = parsed.section("VM0")
    assert vm0.as_params() == [
        {"cpu": [{"model": "host"}]}, {"mem": [{"size": "1"}, {"hugepage": "yes"}]},
    ]
    assert legacy_params(text)["VM0"] == [
        {"cpu": [{"model": "host"}]}, {"mem": [{"size": "1"}, {"hugepage": "yes"}]},
    ]
    assert vm0.param("MEM") is vm0.params[1]


def test_continuation_rules_as_configparser() -> None:
    text = """
    [vm0]
      cpu = a=1;
        b=2;

        c=3;
      mem = size=1;
    disk = file=x;
    net = type=user;
    """
    ours = cfg(text)
    assert ours.section("vm0").as_params() == legacy(text)["vm0"] == [
        {"cpu": [{"a": "1"}, {"b": "2"}, {"c": "3"}]},
        {"mem": [{"size": "1"}]},
        {"disk": [{"file": "x"}]},
        {"net": [{"type": "user"}]},
    ]
    assert ours.section("vm0").raw["cpu"] == "a=1;\nb=2;\n\nc=3;"
    assert dict(ours.section("vm0").raw) == dict(legacy_raw_items(textwrap.dedent(text))["vm0"])


def test_crlf_line_endings() -> None:
    vm0 = parse_cfg("[vm0]\r\ncpu =\r\n    number=2;\r\n").section("vm0")
    assert vm0.as_params() == [{"cpu": [{"number": "2"}]}]
    assert vm0.params[0].entries[0].line == 3


# -- errors --------------------------------------------------------------------------------

def test_duplicate_key_names_both_lines() -> None:
    err = error("[vm0]\ncpu = a=1;\nmem = b;\nCPU = a=2;\n")
    assert err.location == Location("t.cfg", 4, "vm0", "cpu")
    assert "line 2" in err.message and "duplicate key" in err.message
    assert str(err).startswith("t.cfg:4: [vm0] cpu: ")
    with pytest.raises(configparser.DuplicateOptionError):  # legacy also refused it
        legacy_params("[vm0]\ncpu = a=1;\nmem = b;\nCPU = a=2;\n")


def test_duplicate_section_names_both_lines() -> None:
    err = error("[vm0]\ncpu = a;\n[vm1]\n[vm0]\n")
    assert err.location == Location("t.cfg", 4, "vm0")
    assert "duplicate section" in err.message and "line 1" in err.message


def test_duplicate_default_section_is_an_error() -> None:
    text = "[DEFAULT]\na = 1\n[vm0]\n[DEFAULT]\nb = 2\n"
    assert legacy_params(text)["vm0"] == [{"a": [{"1": ""}]}, {"b": [{"2": ""}]}]  # merged
    err = error(text)
    assert err.location.line == 4 and "line 1" in err.message


def test_text_before_first_section() -> None:
    err = error("# comment\n\ncpu = a=1;\n[vm0]\n")
    assert err.location.line == 3 and "before the first [section]" in err.message
    with pytest.raises(configparser.MissingSectionHeaderError):
        legacy_params("cpu = a=1;\n")


@pytest.mark.parametrize("header", ["[vm0", "[vm0] junk", "[]", "[vm0=x"])
def test_malformed_section_header(header: str) -> None:
    err = error(f"[ok]\na = b\n{header}\n")
    assert err.location.line == 3 and "malformed section header" in err.message


@pytest.mark.parametrize("line", ["just words", "= value", ": value"])
def test_line_that_is_not_key_value(line: str) -> None:
    err = error(f"[vm0]\ncpu = a=1;\n\n{line}\n")
    assert err.location == Location("t.cfg", 4, "vm0")
    assert "expected 'key = value'" in err.message


def test_missing_section_names_file_and_existing_sections() -> None:
    with pytest.raises(ConfigError) as info:
        cfg(VXLAN).section("vm9")
    assert info.value.location == Location("t.cfg")
    assert "[vm9]" in str(info.value) and "[vm0]" in str(info.value)
    assert "t.cfg" in str(info.value)


def test_read_cfg_missing_unreadable_and_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found") as info:
        read_cfg(tmp_path / "nope.cfg")
    assert info.value.location.file == str(tmp_path / "nope.cfg")
    with pytest.raises(ConfigError, match="cannot read") as info:
        read_cfg(tmp_path)  # a directory cannot be read as a file
    assert info.value.location.file == str(tmp_path)
    bad = tmp_path / "latin1.cfg"
    bad.write_bytes(b"[vm0]\ncpu = model=h\xf6st;\n")
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        read_cfg(bad)
    assert info.value.location == Location(str(bad), 2)


def test_read_cfg_reads_utf8_with_bom(tmp_path: Path) -> None:
    good = tmp_path / "s.cfg"
    good.write_bytes(b"\xef\xbb\xbf[vm0]\nlogin = user=r\xc3\xb6\xc3\xb6t;\n")
    parsed = read_cfg(good)
    assert parsed.path == str(good)
    assert parsed.section("vm0").as_params() == [{"login": [{"user": "rööt"}]}]


def test_locations() -> None:
    vm0 = cfg(VXLAN).section("vm0")
    assert vm0.location("f.cfg") == Location("f.cfg", 2, "vm0", None)
    assert vm0.location("f.cfg", "mem") == Location("f.cfg", 5, "vm0", "mem")
    mem = vm0.param("mem")
    assert mem is not None and mem.location("f.cfg", "vm0") == Location("f.cfg", 5, "vm0", "mem")
    assert vm0.param("disk") is None


# -- properties ----------------------------------------------------------------------------

GRAMMAR_LINE = st.one_of(
    st.from_regex(r"\A[ \t]*\[[a-zA-Z0-9 =;%#:\]\[]{0,8}\]?[ \t]*\Z"),
    st.from_regex(r"\A[ \t]{0,3}[a-zA-Z_%#;:]{0,6}[ \t]*[=:][ a-z0-9=;,%#:\t]{0,20}\Z"),
    st.from_regex(r"\A[ \t]{1,4}[a-z0-9=;,%#:\t ]{0,20}\Z"),
    st.from_regex(r"\A[ \t]*[#;][^\n\r]{0,10}\Z"),
    st.just(""),
    st.text(max_size=12).filter(lambda s: "\n" not in s and "\r" not in s),
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_raises_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_cfg(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(GRAMMAR_LINE, max_size=15))
def test_grammar_text_parses_or_raises_config_error(lines: list[str]) -> None:
    try:
        parsed = parse_cfg("\n".join(lines))
    except ConfigError as err:
        assert err.location.line is not None and 1 <= err.location.line <= max(len(lines), 1)
    else:
        for section in parsed.sections:
            assert section.as_params() is not None


_WORD = "abcXYZ019_"
NAME = st.builds(str.__add__, st.sampled_from("aZ_"), st.text(_WORD, max_size=5))
VALUE = st.text("aZ09./:=_- ", max_size=10).map(str.strip)


@st.composite
def entry_text(draw: st.DrawFn) -> str:
    names = draw(st.lists(NAME, min_size=1, max_size=4, unique_by=str))
    return ",".join(f"{n}={draw(VALUE)}" for n in names)


@st.composite
def key_block(draw: st.DrawFn, key: str) -> list[str]:
    lines = [[draw(entry_text()) + ";" for _ in range(draw(st.integers(1, 3)))]
             for _ in range(draw(st.integers(0, 3)))]
    text_lines = [" ".join(line) for line in lines]
    omit_last, inline_first = draw(st.booleans()), draw(st.booleans())
    if text_lines and omit_last:
        text_lines[-1] = text_lines[-1][:-1]  # the very last ';' may be omitted
    delim = draw(st.sampled_from(["=", " = ", ": ", "\t=\t"]))
    indent = draw(st.sampled_from(["    ", "\t", "  \t"]))
    out = [f"{key}{delim}".rstrip()]
    if text_lines and inline_first:
        out[0] = f"{key}{delim}{text_lines.pop(0)}"
    for line in text_lines:
        out.append(indent + line)
        if draw(st.integers(0, 4)) == 0:
            out.append(draw(st.sampled_from(["", indent + "# c", "; c", "#x=1;"])))
    return out


@st.composite
def wellformed(draw: st.DrawFn) -> str:
    names = draw(st.lists(st.text(_WORD + " ", min_size=1, max_size=6),
                          min_size=1, max_size=3, unique=True))
    if draw(st.booleans()):
        names.insert(draw(st.integers(0, len(names))), "DEFAULT")
    lines = []
    for name in names:
        lines.append(f"[{name}]")
        for key in draw(st.lists(NAME, max_size=4, unique_by=str.lower)):
            lines.extend(draw(key_block(key)))
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(["", "# comment", "; comment"])))
    return "\n".join(lines) + "\n"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wellformed())
def test_wellformed_files_equal_the_legacy_parser(text: str) -> None:
    parsed = parse_cfg(text)
    expected = legacy_params(text)
    assert list(parsed.names()) == list(expected)
    raw = legacy_raw_items(text)
    for section in parsed.sections:
        assert section.as_params() == expected[section.name]
        assert dict(section.raw) == dict(raw[section.name])
        assert all(e.bare == () and e.repeated == () for p in section.params for e in p.entries)
