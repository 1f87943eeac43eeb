"""Bad input never tracebacks and is never wrongly accepted (pure code, no qemu).

A generated set of mutants of small configs of our own (dropped ``;``, duplicate keys,
unknown parameters and options, bad values, non-ASCII digits, control characters, NUL, BOM,
huge values, emptied values and sections) goes through the reader and loader as ``dtsvirt
lint`` does: each is either a ConfigError whose every line names the file and line, or reads
with the same meaning (the same VmSpec for every VM section). Property-based tests feed any
text to the suite config reader/loader and the DUT config reader, and any values to markers
and overrides: a valid result or ConfigError, never another exception.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_dtsvirt import marker as marker_mod
from pytest_dtsvirt.config.build import DEFAULT_CONTROL_PAIR
from pytest_dtsvirt.config.cfgfile import parse_cfg, read_cfg
from pytest_dtsvirt.config.load import (
    VmParams,
    apply_overrides,
    call_origin,
    params_for_section,
    vm_sections,
)
from pytest_dtsvirt.config.model import VmSpec
from pytest_dtsvirt.config.schema import PARAMS, params
from pytest_dtsvirt.errors import ConfigError
from pytest_dtsvirt.session.dutconfig import load_dut_configs, parse_dut_configs, parse_dut_spec

ROOT = Path(__file__).resolve().parents[1]

# Our own small configs: every VM parameter and most options appear in one of them.
BASES = {
    "vxlan.cfg": """\
# the vxlan sample's VM
[vm0]
cpu =
    model=host,number=2,cpupin=2 3;
mem =
    size=1024,hugepage=no;
disk =
    file=/img/vm0.img,opt_format=qcow2,opt_index=0;
login =
    user=root,password=tester;
vnc =
    displayNum=1;
device =
    driver=vhost-user,opt_path=./vhost-net,opt_mac=00:00:20:00:00:20,opt_queue=2;
    driver=virtio-net-pci,opt_mac=00:00:20:00:00:21,opt_vectors=3
start =
    wait_seconds=200;

[suite]
anything = [1, 2]
""",
    "nets.cfg": """\
[vm1]
name = name=guest1;
enable_kvm = enable=no;
net = type=nic,opt_vlan=0,opt_addr=1f; type=user,opt_vlan=0;
    type=nic,opt_vlan=7,opt_model=virtio,opt_macaddr=52:54:00:00:00:07;
    type=user,opt_vlan=7,opt_hostfwd=tcp::2222-:22;
usercmd = cmd=-device virtio-rng-pci;
qemu = path=/usr/bin/qemu-system-x86_64;
machine = machine=pc;
kernel = file=/boot/vmlinuz,initrd=/boot/initrd.img,append=console=ttyS0;
migration = enable=yes,port=4444;
monitor = path=/tmp/hmp.sock;

[vm2]
mem = size=256;
""",
}

DEFAULT_NETS = (DEFAULT_CONTROL_PAIR,)
_VALUE = re.compile(r"(?P<name>[A-Za-z_]+)=(?P<value>[0-9]+)(?=[,;]|$)")
_OPTION = re.compile(r"(?P<name>[A-Za-z_]+)=")
_KEY = re.compile(r"^(?P<key>[a-z_]+)\s*=")


def meaning(path: Path, names: list[str]) -> dict[str, VmSpec]:
    """What a test asking for VM ``names`` gets: each section's spec (ConfigError if a section
    is missing or wrong); and ``dtsvirt lint``'s verdict on the whole file."""
    cfg = read_cfg(path)
    for section in vm_sections(cfg):
        params_for_section(section, str(path)).build()
    specs: dict[str, VmSpec] = {}
    for name in names:
        specs[name], _ = params_for_section(cfg.section(name), str(path)).build()
    return specs


def vm_lines(text: str) -> list[int]:
    """Indexes of the lines inside VM sections (not comments, headers or [suite])."""
    out: list[int] = []
    vm = False
    for i, line in enumerate(text.split("\n")):
        if line.startswith("["):
            vm = line != "[suite]"
        elif vm and line.strip() and not line.lstrip().startswith("#"):
            out.append(i)
    return out


def key_blocks(text: str) -> list[tuple[int, int]]:
    """``(first, end)`` line index ranges of each VM key with its continuation lines."""
    lines = text.split("\n")
    blocks: list[tuple[int, int]] = []
    for i in vm_lines(text):
        if _KEY.match(lines[i]):
            end = i + 1
            while end < len(lines) and lines[end][:1] in (" ", "\t") and lines[end].strip():
                end += 1
            blocks.append((i, end))
    return blocks


def with_line(text: str, i: int, new: str) -> str:
    lines = text.split("\n")
    lines[i] = new
    return "\n".join(lines)


#: replacements of an all-ASCII-digit option value, none of which is a valid integer option
BAD_NUMBERS = {
    "arabic": "٣", "superscript": "²", "fullwidth": "\uff11\uff12", "huge": "9" * 5000,
    "beyond-limit": "1" + "0" * 4400, "negative": "-1", "float": "1.5", "hex": "0x10",
    "too-big": "99999999999", "spaced": "1 0", "nbsp": "1\u00a00", "empty": "",
}
CONTROL = {"nul": "\0", "esc": "\x1b", "del": "\x7f", "c1": "\x85", "bell": "\x07",
           "vt": "\x0b", "ff": "\x0c", "bom-inside": "\ufeff", "line-separator": "\u2028",
           "paragraph-separator": "\u2029"}


def mutants() -> Iterator[tuple[str, str, str, str]]:
    """``(id, base name, mutant text, expectation)``; expectation: ``error``, ``same``,
    ``either`` (an error or the same meaning) or ``without-section`` (an emptied section is no
    VM section any more; the others mean the same)."""
    for base, text in BASES.items():
        lines = text.split("\n")
        for i in vm_lines(text):
            line = lines[i]
            for n, m in enumerate(re.finditer(";", line)):
                yield (f"{base}:{i + 1}:drop-semicolon-{n}", base,
                       with_line(text, i, line[:m.start()] + line[m.end():]), "either")
            for m in _VALUE.finditer(line):
                for what, bad in BAD_NUMBERS.items():
                    new = line[:m.start("value")] + bad + line[m.end("value"):]
                    yield f"{base}:{i + 1}:{m['name']}-{what}", base, with_line(text, i, new), \
                        "error"
            if (opt := _OPTION.search(line.split("=", 1)[1] if _KEY.match(line) else line)):
                new = line.replace(f"{opt['name']}=", "bogus_opt=", 1)
                yield f"{base}:{i + 1}:unknown-option", base, with_line(text, i, new), "error"
            for n, m in enumerate(re.finditer(r"(?<![^,;\s])[A-Za-z_]+=([^,;]+)", line)):
                yield (f"{base}:{i + 1}:emptied-value-{n}", base,
                       with_line(text, i, line[:m.start(1)] + line[m.end(1):]), "error")
            for what, char in CONTROL.items():
                at = len(line) // 2
                yield (f"{base}:{i + 1}:{what}", base,
                       with_line(text, i, line[:at] + char + line[at:]), "error")
            yield (f"{base}:{i + 1}:tab-inside", base,
                   with_line(text, i, line[:len(line) // 2] + "\t" + line[len(line) // 2:]),
                   "either")
            if line.startswith(" "):
                yield (f"{base}:{i + 1}:unindented", base, with_line(text, i, line.lstrip()),
                       "error")
        for first, end in key_blocks(text):
            key_line = lines[first]
            key = _KEY.match(key_line)
            assert key is not None
            name = key["key"]
            yield (f"{base}:{first + 1}:duplicate-key", base,
                   "\n".join(lines[:end] + lines[first:end] + lines[end:]), "error")
            yield (f"{base}:{first + 1}:unknown-key", base,
                   with_line(text, first, key_line.replace(name, name + "x", 1)), "error")
            yield (f"{base}:{first + 1}:upper-key", base,
                   with_line(text, first, key_line.replace(name, name.upper(), 1)), "same")
            emptied = [*lines[:first], f"{name} ="]
            yield (f"{base}:{first + 1}:emptied", base, "\n".join(emptied + lines[end:]),
                   "error")
            yield (f"{base}:{first + 1}:emptied-to-semicolon", base,
                   "\n".join([*emptied, "    ;", *lines[end:]]), "error")
        yield f"{base}:bom", base, "\ufeff" + text, "same"
        yield f"{base}:crlf", base, text.replace("\n", "\r\n"), "same"
        yield f"{base}:bom-crlf", base, "\ufeff" + text.replace("\n", "\r\n"), "same"
        for i, line in enumerate(lines):
            if line.startswith("[") and line != "[suite]":
                end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("[")),
                           len(lines))
                yield (f"{base}:{i + 1}:emptied-section", base,
                       "\n".join(lines[:i + 1] + lines[end:]), "defaults")
                yield (f"{base}:{i + 1}:duplicate-section", base, text + "\n" + line + "\n",
                       "error")


MUTANTS = list(mutants())


def test_the_mutant_set_is_large_and_covers_every_kind() -> None:
    assert len(MUTANTS) > 500
    kinds = {m[0].rsplit(":", 1)[1].split("-")[0] for m in MUTANTS}
    for kind in ("drop", "unknown", "duplicate", "nul", "bom", "emptied", "upper"):
        assert kind in kinds


def test_the_bases_use_every_parameter() -> None:
    used = {s for t in BASES.values() for s in re.findall(r"^([a-z_]+) =", t, re.M)}
    assert used >= {"name", "enable_kvm", "monitor", "net", "device", "cpu", "mem", "disk",
                    "login", "vnc", "usercmd", "qemu", "start", "machine", "kernel",
                    "migration"}
    assert used <= {p.key for p in params()} | {"anything"}


@pytest.fixture(scope="module")
def mutant_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutants")


@pytest.mark.parametrize(("ident", "base", "text", "expect"), MUTANTS,
                         ids=[m[0] for m in MUTANTS])
def test_mutant_is_a_clear_error_or_means_the_same(mutant_dir: Path, ident: str, base: str,
                                                   text: str, expect: str) -> None:
    tmp_path = mutant_dir
    original = tmp_path / "orig.cfg"
    original.write_text(BASES[base])
    names = [s.name for s in vm_sections(read_cfg(original))]
    path = tmp_path / base
    path.write_bytes(text.encode("utf-8"))
    try:
        got = meaning(path, names)
    except ConfigError as exc:
        assert expect in ("error", "either"), f"{ident}: refused: {exc}"
        for line in str(exc).splitlines():
            assert re.match(rf"{re.escape(str(path))}(:\d+)?: ", line), (ident, line)
        assert f"{path}:" in str(exc)
        return
    assert expect != "error", f"{ident}: wrongly accepted"
    want = meaning(original, names)
    if expect == "defaults":
        name = text.split("\n")[int(ident.split(":")[1]) - 1].strip("[]")
        want[name] = VmSpec(name=name, nets=DEFAULT_NETS)
    assert got == want, ident


def test_named_mutants() -> None:
    """The examples of the bug report, each with its message."""
    def err(text: str) -> str:
        with pytest.raises(ConfigError) as info:
            for section in vm_sections(parse_cfg(text, "t.cfg")):
                params_for_section(section, "t.cfg").build()
        return str(info.value)

    assert err("[vm0]\nmem = size=٣;\n") == "t.cfg:2: [vm0] mem: size: '٣' is not an " \
                                            "integer 16-4194304"
    assert err("[vm0]\ncpu = number=" + "1" * 5000 + ";\n") == (
        "t.cfg:2: [vm0] cpu: number: '11111111111111111111...(5000 characters)' is not an "
        "integer 1-512")
    assert err("[vm0]\ndisk = file=/a\0b;\n") == \
        "t.cfg:2: [vm0] disk: control character '\\x00' in column 15 is not allowed"
    assert err("[vm0]\ndisk =\n    ;\n") == (
        "t.cfg:2: [vm0] disk: no entry: the value is empty (or only ';'); write at least one "
        "entry (name=value,...;) or remove the key")
    assert err("[vm0]\nvnc = displayNum=70000;\n") == \
        "t.cfg:2: [vm0] vnc: displayNum: '70000' is not an integer 0-59535"
    assert err("[vm0]\nnet = type=nic,opt_vlan=4096; type=user,opt_vlan=4096;\n").startswith(
        "t.cfg:2: [vm0] net: opt_vlan: '4096' is not an integer 0-4095")
    assert err("[vm0]\nmigration = enable=yes,port=65536;\n") == \
        "t.cfg:2: [vm0] migration: port: '65536' is not an integer 0-65535"
    assert err("[vm0]\nstart = wait_seconds=0;\n") == \
        "t.cfg:2: [vm0] start: wait_seconds: '0' is not an integer 1-86400"
    assert err("[vm0]\ncpu = number=2,cpupin=1 ²;\n") == (
        "t.cfg:2: [vm0] cpu: cpupin: '1 ²' is not a space separated list of integers 0-8191")
    assert err("[vm0]\n\ufeffmem = size=64;\n") == (
        "t.cfg:2: [vm0]: byte-order mark (U+FEFF) in column 1 is not allowed (only at "
        "the start of the file)")
    assert err("[vm0]\nvnc = displayNum=1,listen=;\n") == (
        "t.cfg:2: [vm0] vnc: listen: empty value; leave the option out for its default "
        "(127.0.0.1)")
    assert err("[vm0]\ncpu = model=,number=2;\n") == (
        "t.cfg:2: [vm0] cpu: model: empty value; leave the option out")
    assert err("[vm0]\ndisk = file=/x,type=;\n") == (
        "t.cfg:2: [vm0] disk: type (read as opt_format): empty value")
    assert err("[vm0]\ncpu =\n    number=2,\x1b;\n") == \
        "t.cfg:3: [vm0] cpu: control character '\\x1b' in column 14 is not allowed"


# ---- markers, calls and overrides -----------------------------------------------------------

def test_marker_huge_int_and_two_entries_of_a_single_entry_parameter() -> None:
    with pytest.raises(ConfigError) as info:
        marker_mod.parse_marker((), {"mem": {"size": 10**5000}}, where="t.py::test_x")
    assert str(info.value) == ("t.py::test_x: @pytest.mark.vm mem: option size: integer of "
                               "16610 bits is too large for any option")
    with pytest.raises(ConfigError) as info:
        marker_mod.parse_marker((), {"cpu": [{"number": 1}, {"number": 2}]}, where="t.py::t")
    assert str(info.value) == ("t.py::t: @pytest.mark.vm cpu: takes one entry (a dict) in a "
                               "marker, which replaces the cfg's; a list of 2 given")
    ok = marker_mod.parse_marker((), {"device": [{"driver": "vhost-cuse"}] * 2, "cpu": [
        {"number": 2}]})
    assert [k for k, _ in ok.entries] == ["device", "device", "cpu"]


def test_set_vm_call_with_a_huge_int_and_overrides_with_two_cpus() -> None:
    params = VmParams("vm0")
    with pytest.raises(ConfigError, match=r"^set_vm_mem\(\): mem: option size: integer of "):
        params.add("mem", {"size": 10**5000}, call_origin("mem"))
    with pytest.raises(ConfigError, match=r"^m: cpu: takes one entry; 2 given$"):
        apply_overrides(params, {"cpu": [{"number": 1}, {"number": 2}]}, "m")


pytest_plugins = ["pytester"]


def test_marker_errors_are_setup_errors_without_traceback(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_markers="""
        import pytest
        @pytest.mark.vm(mem={"size": 10**5000})
        def test_huge(vm):
            pass

        @pytest.mark.vm(cpu=[{"number": 1}, {"number": 2}])
        def test_two_cpus(vm):
            pass
    """)
    result = pytester.runpytest("-rE", "--dtsvirt-hypervisor", "fake", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    assert "option size: integer of 16610 bits is too large for any option" in out
    assert "cpu: takes one entry (a dict) in a marker" in out
    assert "Traceback" not in out and "marker.py" not in out


# ---- the DUT config reader ------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("[d]\nport = ²\n", "f.cfg:2: [d] port: must be a number 1-65535, not '²'"),
    ("[d]\nport = 1" + "0" * 5000 + "\n", "f.cfg:2: [d] port: must be a number 1-65535, not"),
    ("[d]\nmemory_channels = ٣\n", "f.cfg:2: [d] memory_channels: must be a positive number"),
    ("[d]\nhost = 10.0.0.5          ; or \"local\"\n",
     "f.cfg:2: [d] host: '10.0.0.5          ; or \"local\"': inline comments are not supported"),
    ("[d]\nkey = ~/.ssh/id # mine\n", "f.cfg:2: [d] key: '~/.ssh/id # mine': inline comments"),
    ("[d]\nhost = a\0b\n", "f.cfg:2: [d]: control character '\\x00' not allowed"),
    ("[d]\nhost = a b\n", "f.cfg:2: [d] host: 'a b': a host name has no spaces"),
    ("[d]\n\ufeffhost = x\n", "f.cfg:2: [d]: control character '\\ufeff' not allowed"),
])
def test_dut_config_bad_input(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_dut_configs(text, "f.cfg")
    assert str(info.value).startswith(message)


def test_dut_spec_port_of_other_digits() -> None:
    with pytest.raises(ConfigError, match=r"^--dut: host:²: expected \[user@\]host\[:port\]"):
        parse_dut_spec("host:²")
    with pytest.raises(ConfigError, match=r"^--dut: host:٢٢: must be a number 1-65535"):
        parse_dut_spec("host:٢٢")
    with pytest.raises(ConfigError, match=r"must be a number 1-65535, not '9{20}\.\.\.\(5000 "):
        parse_dut_spec("host:" + "9" * 5000)


def test_dut_config_bom_and_password_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "duts.cfg"
    path.write_bytes(b"\xef\xbb\xbf[d]\r\nhost = h\r\npassword = a ; b # c\r\n")
    (dut,) = load_dut_configs(str(path))
    assert (dut.host, dut.password) == ("h", "a ; b # c")
    path.write_bytes(b"[d]\nhost = h\xff\n")
    with pytest.raises(ConfigError, match=r"duts\.cfg:2: not UTF-8 text"):
        load_dut_configs(str(path))


def _readme_block(after: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("```ini", text.index(after)) + len("```ini\n")
    return text[start:text.index("```", start)]


def test_the_readme_dut_sample_parses() -> None:
    (dut,) = parse_dut_configs(_readme_block("The DUT config is in"), "README.md")
    assert (dut.name, dut.host, dut.user, dut.qemu, dut.workdir, dut.memory_channels) == (
        "dut0", "10.0.0.5", "root", "qemu-system-x86_64", "/tmp/dtsvirt-root", 4)
    assert dut.key is not None and dut.key.endswith("/.ssh/id_ed25519")
    assert dut.known_hosts is not None and dut.known_hosts.endswith("/.ssh/known_hosts")


def test_the_readme_suite_sample_builds() -> None:
    section = parse_cfg(_readme_block("## The suite config"), "README.md").section("vm0")
    spec, warnings = params_for_section(section, "README.md").build()
    assert (spec.cpu.number, spec.cpu.pins, spec.mem.size_mb, len(spec.devices)) == (
        2, (24, 25), 4096, 2)
    assert warnings == []


# ---- properties -----------------------------------------------------------------------------

_NAMES = sorted({o.name for p in params() for v in [*p.variants] or [None]
                 for o in p.options_for(v)} | {"bogus", ""})
_KEYS = sorted([*PARAMS, "dev_gen", "bogus"])
_CHARS = st.characters(codec="utf-8", exclude_characters="\n")
_VALUES = st.one_of(
    st.sampled_from(["0", "1", "2", "16", "1024", "yes", "no", "on", "host", "nic", "user",
                     "vhost-user", "virtio-net-pci", "vfio-pci", "00:00:20:00:00:20",
                     "tcp::2222-:22", "0x3", "01:00.0", "/x", "٣", "²", "9" * 5000, "a=b",
                     "-device x", "'", "\0", "\ufeff", "\u2028", "\x85"]),
    st.text(_CHARS, max_size=12))
#: the only password the fuzzers write: passwords are masked in every output, and a short
#: random one ("2") would mask unrelated text of later tests
_PASSWORD = "fuzz-password-value"
_ENTRY = st.lists(st.tuples(st.sampled_from(_NAMES), _VALUES), max_size=4).map(
    lambda opts: ",".join(f"{n}={_PASSWORD if n == 'password' else v}" for n, v in opts))
_LINE = st.one_of(
    st.builds(lambda k, es: f"{k} = {';'.join(es)}", st.sampled_from(_KEYS),
              st.lists(_ENTRY, max_size=3)),
    st.builds(lambda es: "    " + ";".join(es), st.lists(_ENTRY, max_size=3)),
    st.sampled_from(["[vm0]", "[vm1]", "[DEFAULT]", "[suite]", "", ";", "    ;", "# c"]),
    st.text(_CHARS, max_size=20))


def _load_all(text: str) -> None:
    cfg = parse_cfg(text, "f.cfg")
    for section in vm_sections(cfg):
        params_for_section(section, "f.cfg").build()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINE, max_size=12), st.booleans())
def test_any_cfg_text_loads_or_is_a_config_error(lines: list[str], bom: bool) -> None:
    text = ("\ufeff" if bom else "") + "\n".join(lines)
    try:
        _load_all(text)
    except ConfigError as exc:
        assert all(line.startswith("f.cfg") for line in str(exc).splitlines())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_loads_or_is_a_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        _load_all(text)


def _no_password(options: dict[str, Any]) -> dict[str, Any]:
    return {k: _PASSWORD if k == "password" else v for k, v in options.items()}


_PY_VALUES = st.one_of(st.integers(min_value=-(10**4000), max_value=10**4000), st.booleans(),
                       _VALUES, st.floats(), st.none(), st.lists(st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), st.one_of(
    st.dictionaries(st.sampled_from(_NAMES), _PY_VALUES, max_size=3).map(_no_password),
    st.lists(st.dictionaries(st.sampled_from(_NAMES), _PY_VALUES, max_size=3).map(
        _no_password), max_size=3),
    _PY_VALUES), max_size=3))
def test_any_marker_or_override_is_valid_or_a_config_error(overrides: dict[str, Any]) -> None:
    try:
        request = marker_mod.parse_marker((), overrides)
        params = VmParams("vm0")
        for key, options in request.calls():
            params.add(key, options, call_origin(key))
        params.build()
    except ConfigError:
        pass
    try:
        params = VmParams("vm0")
        apply_overrides(params, overrides, "o")
        params.build()
    except ConfigError:
        pass


_DUT_LINE = st.one_of(
    st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(
        ["host", "port", "user", "key", "known_hosts", "host_key_check", "qemu",
         "workdir", "memory_channels", "dut_ip", "channels", "os", "bogus"]), _VALUES),
    st.sampled_from(["[d]", "[e]", "", "# c", "; c", f"password = {_PASSWORD}",
                     f"dut_passwd = {_PASSWORD}"]),
    st.text(_CHARS, max_size=20))


@settings(max_examples=300, deadline=None)
@given(st.lists(_DUT_LINE, max_size=10))
def test_any_dut_config_text_parses_or_is_a_config_error(lines: list[str]) -> None:
    try:
        parse_dut_configs("\n".join(lines), "d.cfg")
    except ConfigError as exc:
        assert str(exc).startswith("d.cfg")
