"""How to start the upstream and each server under test.

Each server reads its block list from a copy in its own work directory, so the reload test can
replace that file with a bigger list and signal the server, without touching its configuration.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from gen_lists import UPSTREAM_A, UPSTREAM_AAAA

# Unbound's defaults are 4 MB message cache and 4 MB RRset cache; Pi-hole+unbound guides and
# unbound's own tuning advice use bigger caches with RRset cache = 2 x message cache. These
# sizes hold far more than any mix here needs, so cache capacity never limits unbound.
UNBOUND_MSG_CACHE = "32m"
UNBOUND_RRSET_CACHE = "64m"
# Pi-hole's default dnsmasq cache size.
DNSMASQ_CACHE_SIZE = 10_000

ROOT_ZONE = f"""$ORIGIN .
$TTL 3600
@ IN SOA ns.invalid. hostmaster.invalid. 1 3600 600 86400 3600
@ IN NS ns.invalid.
* IN A {UPSTREAM_A}
* IN AAAA {UPSTREAM_AAAA}
"""


@dataclass(frozen=True)
class Context:
    """Where a server keeps its files and what it talks to."""

    workdir: Path
    upstream_port: int


def nsd_argv(home: Path, port: int) -> list[str]:
    """NSD serving "." with a wildcard, so every name that is forwarded gets an A/AAAA answer.

    NSD was picked over knotd after measuring both on this kind of machine: equal CPU per
    query, but knotd dropped a few queries under saturation and NSD dropped none. Response
    rate limiting is compiled in and on by default, which would throttle a benchmark, so it is
    switched off.
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / "root.zone").write_text(ROOT_ZONE)
    conf = home / "nsd.conf"
    conf.write_text(f"""server:
    ip-address: 127.0.0.1@{port}
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{home}"
    database: ""
    zonelistfile: "{home}/zone.list"
    xfrdfile: "{home}/xfrd.state"
    pidfile: "{home}/nsd.pid"
    verbosity: 0
    hide-version: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: "."
    zonefile: "root.zone"
""")
    return ["nsd", "-d", "-c", str(conf)]


@dataclass(frozen=True)
class ServerSpec:
    """One server under test.

    list_field names the DataSet file the server reads (domains, hosts or unbound).
    compile_argv, when given, is run before the first start to do one-off work (compiling the
    list) that the start-up figure should not include. warm_start means: if there is no such
    command or it fails, start the server once and stop it, and time the second start.
    optional_flags are dropped, with a note, if the server rejects them.
    """

    name: str
    list_field: str
    argv: Callable[[Context, int, Path, Path], list[str]]
    available: Callable[[], str | None] = lambda: None
    compile_argv: Callable[[Context, Path, Path], list[str]] | None = None
    warm_start: bool = False
    optional_flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


def dnsmasq_argv(ctx: Context, port: int, list_path: Path, _home: Path) -> list[str]:
    return [
        "dnsmasq",
        "-k",
        "--conf-file=/dev/null",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        f"--server=127.0.0.1#{ctx.upstream_port}",
        "--no-hosts",
        f"--addn-hosts={list_path}",
        f"--cache-size={DNSMASQ_CACHE_SIZE}",
        "--user=root",
        "--pid-file=",
        "--log-facility=-",
    ]


def unbound_argv(ctx: Context, port: int, list_path: Path, home: Path) -> list[str]:
    conf = home / "unbound.conf"
    conf.write_text(f"""server:
    verbosity: 0
    num-threads: 1
    interface: 127.0.0.1@{port}
    do-ip6: no
    do-daemonize: no
    use-syslog: no
    logfile: ""
    chroot: ""
    username: ""
    directory: "{home}"
    pidfile: "{home}/unbound.pid"
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    # No validation: the upstream zone is unsigned and neither peer validates either.
    module-config: "iterator"
    msg-cache-size: {UNBOUND_MSG_CACHE}
    rrset-cache-size: {UNBOUND_RRSET_CACHE}
    include: "{list_path}"
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{ctx.upstream_port}
""")
    return ["unbound", "-d", "-p", "-c", str(conf)]


def schoolgate_binary() -> Path | None:
    """The agent entry point of the venv running this harness, else one on PATH."""
    local = Path(sys.executable).parent / "schoolgate-agent"
    if local.exists():
        return local
    found = shutil.which("schoolgate-agent")
    return Path(found) if found else None


def schoolgate_missing() -> str | None:
    return None if schoolgate_binary() else "schoolgate-agent is not installed in this venv"


def schoolgate_config(home: Path) -> Path:
    """The bundled configuration with the scheduled list update switched off.

    With a fresh state directory the agent fetches its remote lists about half a minute after
    it starts, and compiling them would land in whichever measured run it met (the update has
    its own benchmark, update.py). Everything else is the bundled default a school starts from.
    """
    # Imported here: the harness also runs against the other servers without the agent installed.
    from schoolgate.agent.config import BUNDLED_CONFIG

    text = resources.files("schoolgate.filter_lists").joinpath(BUNDLED_CONFIG).read_text()
    if "\n[updates]\n" not in text:
        raise RuntimeError("the bundled configuration has no [updates] table to switch off")
    config = home / "agent.toml"
    config.write_text(text.replace("\n[updates]\n", "\n[updates]\nenabled = false\n", 1))
    return config


def schoolgate_common(list_path: Path, home: Path) -> list[str]:
    """The config, list and state-dir flags shared by `run` and `lists compile`."""
    state = home / "state"
    state.mkdir(parents=True, exist_ok=True)
    return [
        "--config",
        str(schoolgate_config(home)),
        "--list",
        f"adult={list_path}",
        "--state-dir",
        str(state),
    ]


def schoolgate_required() -> Path:
    binary = schoolgate_binary()
    if binary is None:
        raise RuntimeError("schoolgate-agent is not installed")
    return binary


# The agent serves its metrics endpoint this far above its DNS port: the figures are those of
# the agent as a school runs it, with the activity log and metrics on.
METRICS_PORT_OFFSET = 1000


def schoolgate_argv(ctx: Context, port: int, list_path: Path, home: Path) -> list[str]:
    return [
        str(schoolgate_required()),
        "run",
        "--listen",
        f"127.0.0.1:{port}",
        "--upstream",
        f"udp://127.0.0.1:{ctx.upstream_port}",
        "--metrics",
        f"127.0.0.1:{port + METRICS_PORT_OFFSET}",
        *schoolgate_common(list_path, home),
    ]


def schoolgate_compile_argv(_ctx: Context, list_path: Path, home: Path) -> list[str]:
    return [str(schoolgate_required()), "lists", "compile", *schoolgate_common(list_path, home)]


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(
            "schoolgate",
            "domains",
            schoolgate_argv,
            available=schoolgate_missing,
            compile_argv=schoolgate_compile_argv,
            warm_start=True,
            optional_flags=("--state-dir",),
            notes=("blocks listed names and their subdomains",),
        ),
        ServerSpec(
            "dnsmasq",
            "hosts",
            dnsmasq_argv,
            notes=(
                "addn-hosts matches exact names only: subdomains of listed names are "
                "forwarded, as with Pi-hole's exact-match gravity list",
            ),
        ),
        ServerSpec(
            "unbound",
            "unbound",
            unbound_argv,
            notes=("local-zone always_null blocks listed names and their subdomains",),
        ),
    )
}


def without_flag(argv: list[str], flag: str) -> list[str]:
    """argv minus `flag VALUE` (or `flag=VALUE`)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            out.append(arg)
    return out


def install_list(dest: Path, source: Path) -> None:
    """Atomically put a copy of source at dest, the path the server was told to read.

    A copy rather than a symlink: a server may resolve the path once at start-up (schoolgate
    does), and the reload test must replace the file that path names.
    """
    tmp = dest.with_name(dest.name + ".new")
    shutil.copyfile(source, tmp)
    tmp.replace(dest)
