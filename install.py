#!/usr/bin/env python3
"""Install, upgrade or remove the schoolgate agent or collector as a systemd service.

    sudo ./install.py agent [--school NAME] [--listen ADDR:PORT ...] [--lan NETWORK ...]
                            [--upstream URL ...] [--timezone ZONE] [--metrics ADDR:PORT]
                            [--collector URL --site NAME --token-file FILE] [--blockpage]
    sudo ./install.py collector [--database URL] [--listen ADDR:PORT] [--admin NAME]
    sudo ./install.py agent|collector --uninstall [--purge]

For Raspberry Pi OS (Bookworm) and Debian 12 or newer, run as root from a checkout of the
repository. It needs only the system's Python 3.11 or newer: it is run before anything else
is installed, so it uses the standard library alone.

What it does, and what a second run does (docs/install.md says more):

- the Debian packages the programs need (python3-venv, iproute2, tcpdump, ca-certificates);
- a virtual environment in /opt/schoolgate/venv with this checkout installed in it (Debian
  keeps pip away from the system's Python, PEP 668), byte-compiled, since the services cannot
  write Python's cache files there; both programs share it;
- the system user (schoolgate, schoolgate-collector), through a sysusers.d file;
- the configuration in /etc/schoolgate, written from the flags or, at a terminal, from a few
  questions. An existing one is kept as it is: an upgrade changes the program, never the
  configuration or the data. --reconfigure writes it again (the old file is kept as .old);
- the agent's lists compiled, or the collector's database made or upgraded, as the service's
  user, before the service starts on the new version;
- the unit in /etc/systemd/system, enabled, and started (or restarted, on an upgrade).

--uninstall stops and removes the unit and the program, and says what it kept: the
configuration, the data and the user. --purge removes those too.
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

try:
    import tomllib
except ModuleNotFoundError:  # before 3.11: the one check an older Python must get to
    sys.exit(f"schoolgate needs Python 3.11 or newer, not {sys.version.split()[0]}")

SOURCE: Final = Path(__file__).resolve().parent
OPT: Final = Path("/opt/schoolgate")
VENV: Final = OPT / "venv"
ETC: Final = Path("/etc/schoolgate")
UNITS: Final = Path("/etc/systemd/system")
SYSUSERS: Final = Path("/etc/sysusers.d")
QUAD9: Final = ("udp://9.9.9.9:53", "udp://149.112.112.112:53")
COLLECTOR_LISTEN: Final = "127.0.0.1:8480"
LOOPBACK_LISTEN: Final = ("127.0.0.1:53", "[::1]:53")
LOOPBACK_NETWORKS: Final = ("127.0.0.0/8", "::1/128")
SITE_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


class InstallError(Exception):
    """Something the installer cannot do; said in one line, and nothing after it is done."""


@dataclass(frozen=True)
class Component:
    """What is installed for one of the two programs."""

    name: str  # "agent" or "collector"
    program: str
    user: str
    state_dir: Path
    state_mode: int
    packages: tuple[str, ...]

    @property
    def unit(self) -> str:
        return f"{self.program}.service"

    @property
    def config(self) -> Path:
        return ETC / f"{self.name}.toml"

    @property
    def sysusers(self) -> Path:
        return SYSUSERS / f"{self.program}.conf"

    @property
    def command(self) -> Path:
        return VENV / "bin" / self.program


AGENT: Final = Component(
    name="agent",
    program="schoolgate-agent",
    user="schoolgate",
    state_dir=Path("/var/lib/schoolgate"),
    state_mode=0o750,
    # tcpdump turns the network monitor's capture filters into kernel filters; iproute2's
    # "ip neigh" gives IPv6 devices' MAC addresses.
    packages=("python3-venv", "iproute2", "tcpdump", "ca-certificates"),
)
COLLECTOR: Final = Component(
    name="collector",
    program="schoolgate-collector",
    user="schoolgate-collector",
    state_dir=Path("/var/lib/schoolgate-collector"),
    state_mode=0o700,
    packages=("python3-venv", "ca-certificates"),
)
COMPONENTS: Final = {c.name: c for c in (AGENT, COLLECTOR)}


def say(text: str) -> None:
    print(text, flush=True)


def run(argv: Sequence[str | Path], *, what: str) -> str:
    """Run a command; its output, or an InstallError saying what failed and what it said."""
    try:
        done = subprocess.run(
            [str(a) for a in argv],
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
        )
    except OSError as exc:
        raise InstallError(f"{what}: cannot run {argv[0]}: {exc.strerror}") from exc
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()[-12:]
        detail = "\n  ".join(said) or f"exit status {done.returncode}"
        raise InstallError(f"{what} failed:\n  {detail}")
    return done.stdout


def attempt(argv: Sequence[str | Path]) -> tuple[int, str]:
    """Run a command whose failure is an answer, not an error: its exit status and output."""
    try:
        done = subprocess.run(
            [str(a) for a in argv], capture_output=True, text=True, check=False, cwd="/"
        )
    except OSError as exc:
        return 127, str(exc)
    return done.returncode, done.stdout


def as_user(component: Component, *argv: str | Path) -> list[str | Path]:
    """A command line that runs as the service's user, so that what it writes is the
    service's, and what it cannot read, the service could not either."""
    return ["runuser", "-u", component.user, "--", *argv]


# --- Writing TOML ---------------------------------------------------------------------------


def toml_string(text: str) -> str:
    """A TOML basic string holding ``text`` exactly, whatever it holds: JSON's escapes are
    TOML's, but for DEL, which TOML wants escaped and JSON leaves alone."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_list(items: Sequence[str]) -> str:
    return "[" + ", ".join(toml_string(item) for item in items) + "]"


# --- This machine ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LanAddress:
    address: ipaddress.IPv4Interface
    device: str
    dynamic: bool  # from DHCP: it may change, and the agent then cannot listen on it


def lan_addresses(ip_json: str) -> list[LanAddress]:
    """The global IPv4 addresses in ``ip -j -4 addr show``'s output."""
    found: list[LanAddress] = []
    for link in json.loads(ip_json or "[]"):
        for info in link.get("addr_info", []):
            if info.get("family") != "inet" or info.get("scope") != "global":
                continue
            iface = ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")
            found.append(LanAddress(iface, link.get("ifname", "?"), bool(info.get("dynamic"))))
    return found


def this_machines_addresses() -> list[LanAddress]:
    try:
        return lan_addresses(run(["ip", "-j", "-4", "addr", "show"], what="listing addresses"))
    except (InstallError, ValueError, KeyError):
        return []


def this_machines_timezone() -> str:
    named = Path("/etc/timezone")
    if named.is_file():
        zone = named.read_text(encoding="utf-8").strip()
        if zone:
            return zone
    target = os.path.realpath("/etc/localtime")
    _, marker, zone = target.partition("/zoneinfo/")
    return zone if marker else ""


def site_name(school: str) -> str:
    """A collector site name made from a school's name: "St Mary's" -> "st-marys"."""
    text = school.lower().replace("'", "").replace("\u2019", "")
    return re.sub(r"[^a-z0-9._-]+", "-", text).strip("-._")[:64].strip("-._")


# --- The answers ----------------------------------------------------------------------------


@dataclass
class AgentAnswers:
    school: str = ""
    listen: list[str] = field(default_factory=list)
    lan: list[str] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)
    timezone: str = ""
    metrics: str = ""
    collector: str = ""
    site: str = ""
    token: str = ""
    blockpage: bool = False


@dataclass
class CollectorAnswers:
    database: str = ""
    listen: str = COLLECTOR_LISTEN
    admin: str = ""


class Questions:
    """Asks at the terminal when asked to; otherwise every question takes its default."""

    def __init__(self, ask: bool) -> None:
        self.ask = ask

    def text(self, question: str, default: str) -> str:
        if not self.ask:
            return default
        shown = f" [{default}]" if default else ""
        try:
            answer = input(f"{question}{shown}: ").strip()
        except EOFError:
            answer = ""
        return answer or default

    def words(self, question: str, default: Sequence[str]) -> list[str]:
        return self.text(f"{question} (separated by spaces)", " ".join(default)).split()

    def secret(self, question: str) -> str:
        if not self.ask:
            return ""
        if sys.stdin.isatty():
            return getpass.getpass(f"{question}: ").strip()
        return sys.stdin.readline().strip()


def agent_answers(args: argparse.Namespace, questions: Questions) -> AgentAnswers:
    addresses = this_machines_addresses()
    for found in addresses:
        if found.dynamic:
            say(
                f"note: {found.address.ip} on {found.device} came from DHCP. The school's devices"
                " need the agent at an address that never changes: reserve it for this box in the"
                " DHCP server, or give the box a static address (docs/install.md)."
            )
    default_listen = [f"{a.address.ip}:53" for a in addresses] + list(LOOPBACK_LISTEN)
    default_lan = list(dict.fromkeys(str(a.address.network) for a in addresses))
    answers = AgentAnswers()
    answers.school = args.school or questions.text("The school's name", "")
    answers.listen = args.listen or questions.words("Addresses to answer DNS on", default_listen)
    lan = args.lan or questions.words("The school's networks", default_lan)
    answers.lan = list(dict.fromkeys([*lan, *LOOPBACK_NETWORKS]))
    answers.upstream = args.upstream or questions.words("Upstream resolvers", QUAD9)
    answers.timezone = args.timezone or questions.text(
        "Time zone of the schedules", this_machines_timezone()
    )
    answers.metrics = args.metrics or questions.text(
        "Prometheus metrics address, ADDRESS:PORT (empty for none)", ""
    )
    answers.collector = args.collector or questions.text(
        "The district collector's URL (empty for none)", ""
    )
    answers.blockpage = args.blockpage
    if answers.collector:
        answers.site = args.site or questions.text(
            "This school's name at the collector", site_name(answers.school)
        )
        if not SITE_NAME.fullmatch(answers.site):
            raise InstallError(
                f"the site name {answers.site!r} is not 1-64 lowercase letters, digits, '.', '-'"
                " or '_': give it with --site, as schoolgate-collector site add printed it"
            )
        answers.token = read_token(args, questions)
    return answers


def read_token(args: argparse.Namespace, questions: Questions) -> str:
    """The site's token: from --token-file, the environment, or asked for (never a flag of
    its own: arguments show in the process list)."""
    if args.token_file is not None:
        try:
            lines = Path(args.token_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InstallError(f"cannot read --token-file {args.token_file}: {exc}") from exc
        token = lines[0].strip() if lines else ""
    else:
        token = os.environ.get("SCHOOLGATE_COLLECTOR_TOKEN", "").strip()
        token = token or questions.secret("The site's token, as site add printed it")
    if not token:
        raise InstallError(
            "a collector needs the site's token: give --token-file FILE (or set"
            " SCHOOLGATE_COLLECTOR_TOKEN), as schoolgate-collector site add printed it"
        )
    return token


def agent_config(answers: AgentAnswers) -> str:
    """The agent's configuration file, from the answers."""
    lines = [
        "# The schoolgate agent's configuration, written by install.py. Every key is explained",
        "# in docs/configuration.md; a change takes effect on systemctl reload schoolgate-agent",
        "# (server.listen needs a restart). An upgrade never rewrites this file.",
        "",
        "[server]",
        f"listen = {toml_list(answers.listen)}",
        f"state_dir = {toml_string(str(AGENT.state_dir))}",
        "",
        "[clients]",
        "# Only these devices get answers; everyone else is REFUSED.",
        f"networks = {toml_list(answers.lan)}",
        "",
        "[upstream]",
        f"servers = {toml_list(answers.upstream)}",
    ]
    if answers.timezone:
        lines += ["", "[site]", f"timezone = {toml_string(answers.timezone)}"]
    if answers.metrics:
        lines += [
            "",
            "[metrics]",
            "# No password: firewall it to the district's Prometheus.",
            f"listen = {toml_string(answers.metrics)}",
        ]
    if answers.blockpage:
        page_ips = [ip for ip in (_host(listen) for listen in answers.listen) if ip]
        lines += [
            "",
            "[filter]",
            'block_response = "blockpage"',
            f"blockpage_ipv4 = {toml_list(page_ips)}",
        ]
    lines += ["", "[blockpage]", f"enabled = {'true' if answers.blockpage else 'false'}"]
    lines.append(f"school_name = {toml_string(answers.school)}")
    if answers.collector:
        lines += [
            "",
            "[collector]",
            f"url = {toml_string(answers.collector)}",
            f"site = {toml_string(answers.site)}",
            'token_file = "collector.token"  # /etc/schoolgate/collector.token',
        ]
    return "\n".join(lines) + "\n"


def _host(listen: str) -> str:
    """The IPv4 address of an ADDRESS:PORT that is neither loopback nor a wildcard."""
    host = listen.rpartition(":")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return ""
    if address.version != 4 or address.is_loopback or address.is_unspecified:
        return ""
    return host


def collector_answers(args: argparse.Namespace, questions: Questions) -> CollectorAnswers:
    answers = CollectorAnswers()
    answers.database = args.database or questions.text(
        f"Database URL: postgresql://USER@HOST/DB, or empty for SQLite in {COLLECTOR.state_dir}",
        "",
    )
    answers.listen = (
        args.listen[0]
        if args.listen
        else questions.text(
            "Address for the API and admin pages, behind the HTTPS proxy", COLLECTOR_LISTEN
        )
    )
    answers.admin = args.admin or questions.text("A first admin user (empty for none)", "")
    return answers


def collector_config(answers: CollectorAnswers) -> str:
    lines = [
        "# The schoolgate collector's configuration, written by install.py. Every key is",
        "# explained in docs/collector.md; a change takes effect on a restart. An upgrade never",
        "# rewrites this file.",
        "",
        "[server]",
        f"listen = {toml_string(answers.listen)}",
        f"state_dir = {toml_string(str(COLLECTOR.state_dir))}",
    ]
    if answers.database:
        lines += ["", "[database]", f"url = {toml_string(answers.database)}"]
    return "\n".join(lines) + "\n"


# --- Files ----------------------------------------------------------------------------------


def owner_ids(user: str) -> tuple[int, int]:
    import grp  # noqa: PLC0415 - Unix only, like this whole script
    import pwd  # noqa: PLC0415

    return pwd.getpwnam(user).pw_uid, grp.getgrnam(user).gr_gid


def write_file(path: Path, text: str, mode: int, group: str | None = None) -> None:
    """Write a file whole or not at all: a temporary file beside it, flushed to disk, then
    renamed over it. ``group`` may read it; nobody else but root."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        if group is not None:
            os.chown(temp, 0, owner_ids(group)[1])
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def same_text(path: Path, text: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == text
    except OSError:
        return False


def install_file(source: Path, target: Path) -> bool:
    """Copy a file of this checkout into place, 0644; True when it changed."""
    text = source.read_text(encoding="utf-8")
    if same_text(target, text):
        return False
    write_file(target, text, 0o644)
    return True


# --- The steps ------------------------------------------------------------------------------


def check_system() -> None:
    if os.geteuid() != 0:
        raise InstallError("run it as root: sudo ./install.py ...")
    for needed in ("runuser", "systemctl", "systemd-sysusers"):
        if shutil.which(needed) is None:
            raise InstallError(f"{needed} is missing: this installer is for systemd systems")


def missing_packages(packages: Sequence[str]) -> list[str]:
    if shutil.which("dpkg-query") is None:
        return []
    missing = []
    for package in packages:
        if "install ok installed" not in attempt(["dpkg-query", "-W", "-f=${Status}", package])[1]:
            missing.append(package)
    return missing


def install_packages(component: Component, apt: bool) -> None:
    missing = missing_packages(component.packages)
    if not missing:
        return
    if not apt:
        if "python3-venv" in missing:
            raise InstallError("python3-venv is missing: apt-get install python3-venv")
        say(f"warning: not installed, and --no-apt given: {' '.join(missing)}")
        return
    say(f"installing Debian packages: {' '.join(missing)}")
    env = "DEBIAN_FRONTEND=noninteractive"
    run(["env", env, "apt-get", "update", "-qq"], what="apt-get update")
    run(["env", env, "apt-get", "install", "-y", "-qq", *missing], what="apt-get install")


def venv_usable() -> bool:
    """A virtual environment made by this Python: one made by an older Python (before a
    Debian upgrade) points at an interpreter that is gone."""
    config = VENV / "pyvenv.cfg"
    if not (VENV / "bin" / "python").exists() or not config.is_file():
        return False
    for line in config.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            return value.strip().split(".")[:2] == [str(n) for n in sys.version_info[:2]]
    return False


def installed_version(component: Component) -> str:
    if not component.command.exists():
        return ""
    try:
        return run([component.command, "--version"], what="version").split()[-1]
    except (InstallError, IndexError):
        return ""


def install_program(component: Component, extras: Sequence[str], wheels: Path | None) -> None:
    before = installed_version(component)
    if not venv_usable():
        if VENV.exists():
            say(f"{VENV} was made by another Python: making it again")
            shutil.rmtree(VENV)
        OPT.mkdir(mode=0o755, parents=True, exist_ok=True)
        run([sys.executable, "-m", "venv", VENV], what=f"making {VENV}")
    spec = f"{SOURCE}[{','.join(extras)}]" if extras else str(SOURCE)
    pip: list[str | Path] = [VENV / "bin/python", "-m", "pip", "install", "-q"]
    pip.append("--disable-pip-version-check")
    if wheels is not None:
        pip += ["--no-index", "--find-links", wheels]
    say(f"installing schoolgate from {SOURCE} into {VENV} (a few minutes on a Raspberry Pi)")
    run([*pip, "--upgrade", spec], what="pip install")
    # The services cannot write __pycache__ under /opt: without this, every start would
    # compile every module again.
    run(
        [VENV / "bin/python", "-m", "compileall", "-q", "-j", "0", VENV / "lib"],
        what="byte-compiling",
    )
    after = installed_version(component)
    if before and before != after:
        say(f"{component.program} {before} -> {after}")
    elif before:
        say(f"{component.program} {after} installed again (the same version)")
    else:
        say(f"installed {component.program} {after}")


def make_user(component: Component) -> None:
    if install_file(SOURCE / "systemd/sysusers" / component.sysusers.name, component.sysusers):
        say(f"wrote {component.sysusers}")
    run(["systemd-sysusers", component.sysusers], what=f"making the user {component.user}")
    uid, gid = owner_ids(component.user)
    component.state_dir.mkdir(parents=True, exist_ok=True)
    os.chown(component.state_dir, uid, gid)
    component.state_dir.chmod(component.state_mode)


def write_config(component: Component, text: str, secret_files: dict[str, str]) -> None:
    """Put the configuration and its secret files in place; a different one that was there
    is kept beside it as .old."""
    ETC.mkdir(mode=0o755, exist_ok=True)
    target = component.config
    if target.exists() and not same_text(target, text):
        old = target.with_name(target.name + ".old")
        shutil.copy2(target, old)
        say(f"the previous configuration is kept as {old}")
    for name, value in secret_files.items():
        write_file(ETC / name, value + "\n", 0o640, component.user)
        say(f"wrote {ETC / name} (readable by {component.user} only)")
    write_file(target, text, 0o640, component.user)
    say(f"wrote {target}")


def check_config(component: Component) -> None:
    said = run(
        as_user(component, component.command, "config", "check", "--config", component.config),
        what=f"checking {component.config}",
    )
    say(said.strip())


def compile_lists(download: bool) -> None:
    """Download the public lists and compile; offline, compile what is here, and the agent
    fetches the rest at its next update."""
    if not download:
        said = run(
            as_user(AGENT, AGENT.command, "lists", "compile", "--config", AGENT.config),
            what="compiling the lists",
        )
        say(said.strip().splitlines()[-1])
        say("the public lists are downloaded at the agent's first update")
        return
    status, said = attempt(
        as_user(AGENT, AGENT.command, "lists", "update", "--config", AGENT.config)
    )
    if status in (0, 3):  # 3: built, with some sources failing
        say(said.strip().splitlines()[-1] if said.strip() else "lists compiled")
        return
    say("the lists could not be downloaded now: compiling the bundled ones;")
    say("the agent downloads the rest at its next update")
    said = run(
        as_user(AGENT, AGENT.command, "lists", "compile", "--config", AGENT.config),
        what="compiling the lists",
    )
    say(said.strip().splitlines()[-1])


def prepare_database(answers: CollectorAnswers | None) -> None:
    config = ["--config", str(COLLECTOR.config)]
    said = run(
        as_user(COLLECTOR, COLLECTOR.command, "migrate", *config),
        what="making or upgrading the database",
    )
    say(said.strip())
    if answers is None or not answers.admin:
        return
    users = run(as_user(COLLECTOR, COLLECTOR.command, "user", "list", *config), what="user list")
    if any(line.split()[:1] == [answers.admin.lower()] for line in users.splitlines()[1:]):
        say(f"the user {answers.admin} is there already")
        return
    password = secrets.token_urlsafe(15)
    # Handed over in a file only the collector's user can read: never an argument.
    fd, name = tempfile.mkstemp(prefix="schoolgate-admin.")
    try:
        os.fchown(fd, *owner_ids(COLLECTOR.user))
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(password + "\n")
        add = ["user", "add", answers.admin, "--role", "admin", "--password-file", name]
        run(
            as_user(COLLECTOR, COLLECTOR.command, *add, *config),
            what=f"adding the admin {answers.admin}",
        )
    finally:
        Path(name).unlink(missing_ok=True)
    say(f"added the admin {answers.admin}; password, shown this once: {password}")


WILDCARDS: Final = {"0.0.0.0", "::", "*"}


def port_holders(listen: Sequence[str], ss_output: str) -> dict[str, set[str]]:
    """The programs other than the agent already listening where the agent is to listen, from
    ``ss -Hlnup``/``-Hlntp`` output: ``{"10.20.0.53:53": {"dnsmasq"}}``. Two sockets clash on
    the same port when their addresses are the same or either is a wildcard."""
    held: dict[str, set[str]] = {}
    for line in ss_output.splitlines():
        fields = line.split()
        local = next((f for f in fields[3:5] if re.search(r":\d+$", f)), "")
        host, _, port = local.rpartition(":")
        host = host.strip("[]").partition("%")[0]
        for program in re.findall(r'\(\("([^"]+)"', line):
            if program.startswith("schoolgate"):
                continue
            for entry in listen:
                ours, _, our_port = entry.rpartition(":")
                ours = ours.strip("[]")
                if our_port == port and (host in WILDCARDS or ours in WILDCARDS or host == ours):
                    held.setdefault(entry, set()).add(program)
    return held


def warn_ports_taken() -> None:
    """Say which program already holds an address the agent is to listen on: the start fails
    there until it is stopped or moved (dnsmasq, most often)."""
    try:
        with AGENT.config.open("rb") as file:
            listen = [str(e) for e in tomllib.load(file).get("server", {}).get("listen", [])]
    except (OSError, tomllib.TOMLDecodeError):
        return
    udp, said_udp = attempt(["ss", "-Hlnup"])
    tcp, said_tcp = attempt(["ss", "-Hlntp"])
    if udp or tcp:
        return
    for entry, programs in sorted(port_holders(listen, said_udp + said_tcp).items()):
        say(
            f"warning: {entry} is taken by {', '.join(sorted(programs))}: the agent cannot"
            " listen there until that stops or moves (docs/troubleshooting.md)"
        )


def systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir()


def install_unit(component: Component, start: bool) -> None:
    if install_file(SOURCE / "systemd" / component.unit, UNITS / component.unit):
        say(f"wrote {UNITS / component.unit}")
    running = systemd_running()
    if running:
        run(["systemctl", "daemon-reload"], what="systemctl daemon-reload")
    run(["systemctl", "enable", "--quiet", component.unit], what=f"enabling {component.unit}")
    if not running:
        say(f"{component.unit} is enabled; systemd is not running here, so it starts at boot")
        return
    if not start:
        say(f"{component.unit} is enabled; start it with: systemctl start {component.unit}")
        return
    # A restart starts a stopped unit too, and returns once the service says it is ready.
    run(["systemctl", "restart", component.unit], what=f"starting {component.unit}")
    status = run(["systemctl", "show", "-P", "StatusText", component.unit], what="status")
    say(f"{component.unit} is running: {status.strip() or 'ready'}")


# --- Install and uninstall ------------------------------------------------------------------


def install(component: Component, args: argparse.Namespace) -> None:
    check_system()
    writing = args.reconfigure or not component.config.exists()
    questions = Questions(args.ask if args.ask is not None else sys.stdin.isatty())
    if not writing:
        questions.ask = False
    install_packages(component, args.apt)
    collector: CollectorAnswers | None = None
    text, secret_files = "", {}
    extras: list[str] = []
    if component is AGENT:
        if writing:
            agent = agent_answers(args, questions)
            text = agent_config(agent)
            secret_files = {"collector.token": agent.token} if agent.token else {}
    else:
        collector = collector_answers(args, questions)
        text = collector_config(collector)
        database = collector.database if writing else _configured_database()
        extras = ["postgresql"] if database.startswith("postgresql") else []
    install_program(component, extras, args.wheels)
    make_user(component)
    if writing:
        write_config(component, text, secret_files)
    else:
        say(f"kept {component.config} as it is (--reconfigure writes it again)")
    check_config(component)
    if component is AGENT:
        compile_lists(args.download)
        warn_ports_taken()
    else:
        prepare_database(collector)
    install_unit(component, args.start)
    refresh_other(component, args.start)
    next_steps(component)


def refresh_other(component: Component, start: bool) -> None:
    """The other program, when this machine has it too, runs from the same venv, which now
    holds the new version: it gets what its own installer run would have done (its
    configuration checked, the collector's database upgraded) and is restarted if running."""
    other = COLLECTOR if component is AGENT else AGENT
    if not (UNITS / other.unit).exists() or not other.config.exists():
        return
    say(f"{other.program} shares {VENV}: bringing it up to the same version")
    check_config(other)
    if other is COLLECTOR:
        prepare_database(None)
    if start and systemd_running():
        run(["systemctl", "try-restart", other.unit], what=f"restarting {other.unit}")


def _configured_database() -> str:
    try:
        with COLLECTOR.config.open("rb") as config:
            url = tomllib.load(config).get("database", {}).get("url", "")
    except (OSError, tomllib.TOMLDecodeError):
        return ""
    return url if isinstance(url, str) else ""


def next_steps(component: Component) -> None:
    config = f"--config {component.config}"
    say("")
    if component is COLLECTOR:
        say(f"Register a school: sudo -u {component.user} {component.command} site add NAME")
        say(f"  {config}")
        say("The admin pages and the API listen where server.listen says; put the district's")
        say("HTTPS proxy in front of them (docs/collector.md).")
        return
    try:
        with component.config.open("rb") as file:
            listen = tomllib.load(file).get("server", {}).get("listen", [])
    except (OSError, tomllib.TOMLDecodeError):
        listen = []
    lan = next((host for host in map(_host, listen) if host), "")
    say(f"Check it: dig @{lan or '127.0.0.1'} www.example.org")
    if lan:
        say(f"Then give {lan} as the DNS server in the school's DHCP settings (docs/install.md).")
    say(f"Decisions: sudo -u {component.user} {component.command} check NAME --client IP {config}")


def uninstall(component: Component, purge: bool) -> None:
    check_system()
    unit = UNITS / component.unit
    if unit.exists():
        now = ["--now"] if systemd_running() else []
        attempt(["systemctl", "disable", *now, "--quiet", component.unit])
        unit.unlink()
        say(f"removed {unit}")
        if systemd_running():
            attempt(["systemctl", "daemon-reload"])
    other = COLLECTOR if component is AGENT else AGENT
    if (UNITS / other.unit).exists():
        say(f"kept {VENV}: {other.program} is still installed and uses it")
    elif OPT.exists():
        shutil.rmtree(OPT)
        say(f"removed {OPT}")
    kept: list[tuple[Path | str, str]] = []
    for path in [*_config_files(component), component.state_dir]:
        if not path.exists():
            continue
        if not purge:
            kept.append((path, "data" if path == component.state_dir else "configuration"))
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        say(f"removed {path}")
    if purge:
        component.sysusers.unlink(missing_ok=True)
        if _user_exists(component.user):
            run(["userdel", component.user], what=f"removing the user {component.user}")
            say(f"removed the user {component.user}")
        if ETC.is_dir() and not any(ETC.iterdir()):
            ETC.rmdir()
        return
    if _user_exists(component.user):
        kept.append((component.user, "user"))
    if kept:
        say("kept, for a later install (--purge removes them too):")
        for what, kind in kept:
            say(f"  {kind}: {what}")


def _config_files(component: Component) -> list[Path]:
    """The files the installer wrote in /etc/schoolgate for ``component``."""
    written = [component.config, component.config.with_name(component.config.name + ".old")]
    return [*written, ETC / "collector.token"] if component is AGENT else written


def _user_exists(user: str) -> bool:
    try:
        owner_ids(user)
    except KeyError:
        return False
    return True


# --- Command line ---------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="install.py",
        description="Install, upgrade or remove the schoolgate agent or collector.",
        epilog="docs/install.md walks through an installation on a Raspberry Pi.",
    )
    p.add_argument("component", choices=sorted(COMPONENTS), help="which program")
    p.add_argument("--uninstall", action="store_true", help="remove it; keep config and data")
    p.add_argument("--purge", action="store_true", help="with --uninstall: remove those too")
    p.add_argument("--reconfigure", action="store_true", help="write the configuration again")
    ask = p.add_mutually_exclusive_group()
    ask.add_argument("--ask", dest="ask", action="store_true", default=None, help="ask questions")
    ask.add_argument("--yes", dest="ask", action="store_false", help="ask nothing: flags only")
    p.add_argument("--no-apt", dest="apt", action="store_false", help="install no packages")
    p.add_argument("--no-start", dest="start", action="store_false", help="enable, not start")
    p.add_argument(
        "--no-download", dest="download", action="store_false", help="agent: bundled lists only"
    )
    p.add_argument(
        "--wheels", type=lambda p: Path(p).resolve(), help="install from these wheels only, offline"
    )
    agent = p.add_argument_group("agent")
    agent.add_argument("--school", default="", help="the school's name, for the block page")
    agent.add_argument("--listen", action="append", default=[], metavar="ADDR:PORT")
    agent.add_argument("--lan", action="append", default=[], metavar="NETWORK")
    agent.add_argument("--upstream", action="append", default=[], metavar="URL")
    agent.add_argument("--timezone", default="", metavar="ZONE", help="e.g. Europe/London")
    agent.add_argument("--metrics", default="", metavar="ADDR:PORT", help="Prometheus endpoint")
    agent.add_argument("--collector", default="", metavar="URL", help="the district collector")
    agent.add_argument("--site", default="", help="the school's name at the collector")
    agent.add_argument("--token-file", type=Path, metavar="FILE", help="the site's token")
    agent.add_argument("--blockpage", action="store_true", help="serve the block page")
    collector = p.add_argument_group("collector")
    collector.add_argument("--database", default="", metavar="URL", help="postgresql://...")
    collector.add_argument("--admin", default="", metavar="NAME", help="a first admin user")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    component = COMPONENTS[args.component]
    if args.purge and not args.uninstall:
        say("install.py: --purge goes with --uninstall")
        return EXIT_USAGE
    try:
        if args.uninstall:
            uninstall(component, args.purge)
        else:
            install(component, args)
    except InstallError as exc:
        say(f"install.py: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        say("install.py: stopped; run it again to finish (it carries on from where it is)")
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
