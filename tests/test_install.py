"""install.py: a district collector and a school's agent installed as on a Raspberry Pi, into a
scratch root, then used, installed again, reconfigured, uninstalled and purged.

The installer runs as root with this machine's own Python, in a mount namespace whose /etc,
/opt, /usr and /var are overlays (tests/support/scratch_root.py): every file it writes is in
the overlays' upper directories, and the machine is left as it was. systemd is not running
there, so the units are enabled, not started; the tests start the installed programs
themselves, as the units would, as the service users.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

import install
from schoolgate.agent.config import load as load_agent_config
from schoolgate.server.db.engine import open_engine
from tests.server.conftest import POSTGRESQL, postgresql_unreachable
from tests.support.process import free_port, wait_until_answering
from tests.support.scratch_root import ScratchRoot, scratch_root, unavailable
from tests.support.upstream import FakeUpstream
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
INSTALLER = str(REPO / "install.py")
SYSTEM_PYTHON = "/usr/bin/python3"
SCHOOL = 'St Mary\'s "Primary" \\ Trường Tiểu học'
SITE = "st-marys"
ADMIN = "district-admin"


# --- Without a scratch root: what the installer writes ------------------------------------


@given(st.text(max_size=60))
def test_a_toml_string_holds_any_text(text: str) -> None:
    assert tomllib.loads(f"key = {install.toml_string(text)}")["key"] == text


def test_the_agent_configuration_loads_with_hostile_answers(tmp_path: Path) -> None:
    answers = install.AgentAnswers(
        school=SCHOOL + "\x7f",
        listen=["10.20.0.53:53", "127.0.0.1:53"],
        lan=["10.20.0.0/16", "127.0.0.0/8"],
        upstream=list(install.QUAD9),
        timezone="Europe/London",
        metrics="127.0.0.1:9717",
        collector="https://collector.district.example",
        site=SITE,
        token="sgs_x",
        blockpage=True,
    )
    path = tmp_path / "agent.toml"
    path.write_text(install.agent_config(answers), encoding="utf-8")
    (tmp_path / "collector.token").write_text("sgs_x\n", encoding="utf-8")
    config = load_agent_config(path)
    assert config.blockpage.school_name == SCHOOL + "\x7f"
    assert config.listen == (("10.20.0.53", 53), ("127.0.0.1", 53))
    assert config.blockpage.enabled
    assert config.upload is not None
    assert config.upload.site == SITE
    assert config.metrics_listen == ("127.0.0.1", 9717)


@pytest.mark.parametrize(
    ("school", "site"),
    [
        ("St Mary's Primary", "st-marys-primary"),
        ("Hillside  Academy (North)", "hillside-academy-north"),
        ("École Sainte-Anne", "cole-sainte-anne"),
        ("---", ""),
        ("x" * 80, "x" * 64),
    ],
)
def test_a_site_name_is_made_from_the_schools(school: str, site: str) -> None:
    assert install.site_name(school) == site
    assert site == "" or install.SITE_NAME.fullmatch(site)


def test_the_lan_addresses_come_from_ip_addr() -> None:
    shown = json.dumps(
        [
            {
                "ifname": "lo",
                "addr_info": [
                    {"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host"}
                ],
            },
            {
                "ifname": "eth0",
                "addr_info": [
                    {"family": "inet", "local": "10.20.0.53", "prefixlen": 16, "scope": "global"},
                    {
                        "family": "inet",
                        "local": "192.168.4.9",
                        "prefixlen": 24,
                        "scope": "global",
                        "dynamic": True,
                    },
                ],
            },
        ]
    )
    found = install.lan_addresses(shown)
    assert [(str(a.address), a.device, a.dynamic) for a in found] == [
        ("10.20.0.53/16", "eth0", False),
        ("192.168.4.9/24", "eth0", True),
    ]
    assert found[0].address.network == ipaddress.IPv4Network("10.20.0.0/16")


def test_programs_on_the_agent_s_ports_are_named() -> None:
    shown = "\n".join(
        [
            'udp UNCONN 0 0 0.0.0.0:53 0.0.0.0:* users:(("dnsmasq",pid=812,fd=4))',
            'udp UNCONN 0 0 127.0.0.53%lo:53 0.0.0.0:* users:(("systemd-resolve",pid=3,fd=13))',
            'udp UNCONN 0 0 [::]:5353 [::]:* users:(("avahi-daemon",pid=5,fd=14))',
            'tcp LISTEN 0 4096 10.20.0.53:53 0.0.0.0:* users:(("schoolgate-agent",pid=9,fd=7))',
            "udp UNCONN 0 0 0.0.0.0:68 0.0.0.0:*",
        ]
    )
    listen = ["10.20.0.53:53", "127.0.0.1:53", "[::1]:53"]
    # dnsmasq on every address clashes with each; resolved's stub on 127.0.0.53 with none.
    assert install.port_holders(listen, shown) == {entry: {"dnsmasq"} for entry in listen}
    assert install.port_holders(["0.0.0.0:53"], shown) == {
        "0.0.0.0:53": {"dnsmasq", "systemd-resolve"}
    }


# --- In a scratch root ----------------------------------------------------------------------


@dataclass
class Installed:
    root: ScratchRoot
    base: Path
    upstream: FakeUpstream
    dns_port: int
    api_port: int
    metrics_port: int
    token: str
    collector_said: str
    agent_said: str

    def agent_flags(self) -> list[str]:
        return [
            "--school",
            SCHOOL,
            "--listen",
            f"127.0.0.1:{self.dns_port}",
            "--lan",
            "10.20.0.0/16",
            "--upstream",
            self.upstream.url,
            "--timezone",
            "Europe/London",
            "--metrics",
            f"127.0.0.1:{self.metrics_port}",
            "--collector",
            f"http://127.0.0.1:{self.api_port}",
            "--site",
            SITE,
            "--token-file",
            str(self.base / "site.token"),
        ]

    def install(self, *args: str) -> str:
        """Run the installer in the scratch root; what it said, or a failed test."""
        done = self.root.run([SYSTEM_PYTHON, INSTALLER, *args, "--yes", "--no-apt"])
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


def as_service_user(user: str, *argv: str) -> list[str]:
    """As the units run the programs: the service's user, no shell, signals straight to it."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *argv]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    if not Path(SYSTEM_PYTHON).exists() or sys.version_info < (3, 11):
        pytest.skip("the installer runs with the system's Python 3.11 or newer")
    base = tmp_path_factory.mktemp("scratch")
    upstream = FakeUpstream().start()
    upstream.add("www.example.org", "A", "192.0.2.80")
    try:
        with scratch_root(base) as root:
            found = Installed(
                root, base, upstream, free_port(), free_port(), free_port(), "", "", ""
            )
            found.collector_said = found.install(
                "collector", "--listen", f"127.0.0.1:{found.api_port}", "--admin", ADMIN
            )
            added = root.run(
                as_service_user(
                    "schoolgate-collector",
                    "/opt/schoolgate/venv/bin/schoolgate-collector",
                    "site",
                    "add",
                    SITE,
                    "--config",
                    "/etc/schoolgate/collector.toml",
                )
            )
            assert added.returncode == 0, added.stderr
            found.token = added.stdout.split()[-1]
            (base / "site.token").write_text(found.token + "\n", encoding="utf-8")
            found.agent_said = found.install("agent", "--no-download", *found.agent_flags())
            yield found
    finally:
        upstream.stop()


def mode_owner(path: Path) -> tuple[int, str, str]:
    """A file's permission bits and owner, by the names in the scratch root's /etc/passwd."""
    st_ = path.lstat()
    return (
        stat.S_IMODE(st_.st_mode),
        _name(path, st_.st_uid, "passwd"),
        _name(path, st_.st_gid, "group"),
    )


def _name(path: Path, number: int, table: str) -> str:
    root = next(p for p in path.parents if p.name == "upper")
    for source in (root / "etc" / table, Path("/etc") / table):
        if source.exists():
            for line in source.read_text(encoding="utf-8").splitlines():
                fields = line.split(":")
                if len(fields) > 2 and fields[2] == str(number):
                    return fields[0]
    return str(number)


def test_the_installer_says_what_it_did(installed: Installed) -> None:
    said = installed.collector_said
    assert "installed schoolgate-collector" in said
    assert "database upgraded from revision (empty)" in said
    assert re.search(rf"added the admin {ADMIN}; password, shown this once: \S{{20}}", said)
    said = installed.agent_said
    assert "wrote /etc/schoolgate/agent.toml" in said
    assert "configuration OK: /etc/schoolgate/agent.toml" in said
    assert "is now current in /var/lib/schoolgate/lists" in said
    assert "schoolgate-agent.service is enabled" in said
    # The collector shares the venv the agent's run just filled: it is brought along.
    assert "schoolgate-collector shares /opt/schoolgate/venv" in said
    assert "the database is at revision" in said


def test_every_file_written_is_accounted_for(installed: Installed) -> None:
    written = {
        path
        for path in installed.root.written()
        if not path.startswith("/opt/schoolgate/venv/")
        # Python may cache a standard module it had not compiled before; no file of ours.
        and "__pycache__" not in path
        and not re.match(r"/var/lib/schoolgate(-collector)?/.", path)
    }
    users = {"/etc/.pwd.lock"} | {
        f"/etc/{table}{suffix}"
        for table in ("passwd", "group", "shadow", "gshadow")
        for suffix in ("", "-")
    }
    assert written - users == {
        "/etc/schoolgate",
        "/etc/schoolgate/agent.toml",
        "/etc/schoolgate/collector.toml",
        "/etc/schoolgate/collector.token",
        "/etc/systemd",
        "/etc/systemd/system",
        "/etc/systemd/system/multi-user.target.wants",
        "/etc/systemd/system/multi-user.target.wants/schoolgate-agent.service",
        "/etc/systemd/system/multi-user.target.wants/schoolgate-collector.service",
        "/etc/systemd/system/schoolgate-agent.service",
        "/etc/systemd/system/schoolgate-collector.service",
        "/etc/sysusers.d",
        "/etc/sysusers.d/schoolgate-agent.conf",
        "/etc/sysusers.d/schoolgate-collector.conf",
        "/opt/schoolgate",
        "/opt/schoolgate/venv",
        "/var/lib",
        "/var/lib/schoolgate",
        "/var/lib/schoolgate-collector",
    }
    assert {"/etc/passwd", "/etc/group"} <= written


def test_each_file_has_its_owner_and_mode(installed: Installed) -> None:
    upper = installed.root.upper
    assert mode_owner(upper("/etc/schoolgate")) == (0o755, "root", "root")
    assert mode_owner(upper("/etc/schoolgate/agent.toml")) == (0o640, "root", "schoolgate")
    assert mode_owner(upper("/etc/schoolgate/collector.token")) == (0o640, "root", "schoolgate")
    assert mode_owner(upper("/etc/schoolgate/collector.toml")) == (
        0o640,
        "root",
        "schoolgate-collector",
    )
    assert upper("/etc/schoolgate/collector.token").read_text() == installed.token + "\n"
    assert mode_owner(upper("/var/lib/schoolgate")) == (0o750, "schoolgate", "schoolgate")
    assert mode_owner(upper("/var/lib/schoolgate-collector")) == (
        0o700,
        "schoolgate-collector",
        "schoolgate-collector",
    )
    assert mode_owner(upper("/var/lib/schoolgate/lists/current.sgl"))[1] == "schoolgate"
    for unit in ("schoolgate-agent.service", "schoolgate-collector.service"):
        placed = upper(f"/etc/systemd/system/{unit}")
        assert mode_owner(placed) == (0o644, "root", "root")
        assert placed.read_bytes() == (REPO / "systemd" / unit).read_bytes()
        wants = upper(f"/etc/systemd/system/multi-user.target.wants/{unit}")
        assert wants.readlink() == Path(f"/etc/systemd/system/{unit}")
    for conf in ("schoolgate-agent.conf", "schoolgate-collector.conf"):
        placed = upper(f"/etc/sysusers.d/{conf}")
        assert placed.read_bytes() == (REPO / "systemd/sysusers" / conf).read_bytes()
    passwd = upper("/etc/passwd").read_text(encoding="utf-8")
    assert re.search(
        r"^schoolgate:x:\d+:\d+:[^:]*:/var/lib/schoolgate:/usr/sbin/nologin$", passwd, re.M
    )


def test_the_program_is_root_s_and_byte_compiled(installed: Installed) -> None:
    venv = installed.root.upper("/opt/schoolgate/venv")
    package = next(venv.glob("lib/python3.*/site-packages/schoolgate"))
    tag = f"cpython-{sys.version_info[0]}{sys.version_info[1]}"
    sources = list(package.rglob("*.py"))
    assert len(sources) > 100
    for source in sources:
        assert (source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc").exists(), source
    for path in [venv, *venv.rglob("*")]:
        if not path.is_symlink():
            mode, user, _group = mode_owner(path)
            assert user == "root" and not mode & 0o022, path


def test_the_configuration_is_what_was_asked_for(installed: Installed) -> None:
    agent = tomllib.loads(installed.root.upper("/etc/schoolgate/agent.toml").read_text())
    assert agent["server"] == {
        "listen": [f"127.0.0.1:{installed.dns_port}"],
        "state_dir": "/var/lib/schoolgate",
    }
    assert agent["clients"]["networks"] == ["10.20.0.0/16", "127.0.0.0/8", "::1/128"]
    assert agent["upstream"]["servers"] == [installed.upstream.url]
    assert agent["site"] == {"timezone": "Europe/London"}
    assert agent["blockpage"] == {"enabled": False, "school_name": SCHOOL}
    assert agent["collector"] == {
        "url": f"http://127.0.0.1:{installed.api_port}",
        "site": SITE,
        "token_file": "collector.token",
    }
    collector = tomllib.loads(installed.root.upper("/etc/schoolgate/collector.toml").read_text())
    assert collector == {
        "server": {
            "listen": f"127.0.0.1:{installed.api_port}",
            "state_dir": "/var/lib/schoolgate-collector",
        }
    }


def test_systemd_accepts_the_installed_units(installed: Installed) -> None:
    for unit in ("schoolgate-agent.service", "schoolgate-collector.service"):
        done = installed.root.run(["systemd-analyze", "verify", f"/etc/systemd/system/{unit}"])
        assert [line for line in done.stderr.splitlines() if unit in line] == [], done.stderr
        assert done.returncode == 0, done.stderr
        enabled = installed.root.run(["systemctl", "is-enabled", unit])
        assert enabled.stdout.strip() == "enabled"


def test_the_installed_agent_filters_and_reports_to_the_installed_collector(
    installed: Installed,
) -> None:
    root, base = installed.root, installed.base
    collector = root.start(
        as_service_user(
            "schoolgate-collector",
            "/opt/schoolgate/venv/bin/schoolgate-collector",
            "run",
            "--config",
            "/etc/schoolgate/collector.toml",
        ),
        base / "collector.log",
    )
    agent = root.start(
        as_service_user(
            "schoolgate",
            "/opt/schoolgate/venv/bin/schoolgate-agent",
            "run",
            "--config",
            "/etc/schoolgate/agent.toml",
        ),
        base / "agent.log",
    )
    api = f"http://127.0.0.1:{installed.api_port}"
    try:
        wait_until_answering(installed.dns_port, agent, timeout=60)
        query = dns.message.make_query("www.example.org", "A")
        answer = dns.query.udp(query, "127.0.0.1", port=installed.dns_port, timeout=5)
        assert answer.rcode() == dns.rcode.NOERROR
        assert [rr.address for rr in answer.answer[0]] == ["192.0.2.80"]
        blocked = dns.query.udp(
            dns.message.make_query("dns.google", "A"),
            "127.0.0.1",
            port=installed.dns_port,
            timeout=5,
        )
        assert [rr.address for rr in blocked.answer[0]] == ["0.0.0.0"]
        metrics = httpx.get(f"http://127.0.0.1:{installed.metrics_port}/metrics", timeout=5)
        blocked_count = r'^schoolgate_dns_queries_total\{.*outcome="blocked".*\} [1-9]'
        assert re.search(blocked_count, metrics.text, re.M)
        assert wait_for(lambda: listening(f"{api}/metrics"), timeout=60), (
            base / "collector.log"
        ).read_text()
        password = re.search(r"shown this once: (\S+)", installed.collector_said)
        assert password is not None
        signed_in = httpx.post(
            f"{api}/api/v1/sessions", json={"name": ADMIN, "password": password.group(1)}
        )
        assert signed_in.status_code == 201, signed_in.text
        bearer = {"Authorization": f"Bearer {signed_in.json()['token']}"}

        def names_seen() -> set[str]:
            found = httpx.get(f"{api}/api/v1/events", headers=bearer, params={"site": SITE})
            return {event["name"] for event in found.json()["events"]}

        assert wait_for(lambda: {"www.example.org", "dns.google"} <= names_seen(), timeout=60)
    finally:
        for proc in (agent, collector):
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=30)
    assert agent.returncode == 0, (base / "agent.log").read_text()


def listening(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def snapshot(root: ScratchRoot) -> dict[str, tuple[int, str, str, str]]:
    """Each installed file's mode, owner and content, but the programs' own data."""
    found = {}
    for name in sorted(root.written()):
        if name.startswith(("/opt/schoolgate/venv/", "/var/lib/schoolgate")) or "pycache" in name:
            continue
        path = root.upper(name)
        digest = (
            ""
            if path.is_dir() or path.is_symlink()
            else hashlib.sha256(path.read_bytes()).hexdigest()
        )
        found[name] = (*mode_owner(path), digest)
    return found


def test_a_second_run_changes_nothing(installed: Installed) -> None:
    before = snapshot(installed.root)
    said = installed.install("agent", "--no-download", *installed.agent_flags())
    assert "kept /etc/schoolgate/agent.toml as it is" in said, said
    assert "installed again (the same version)" in said
    said = installed.install("collector", "--admin", ADMIN)
    assert "the database is at revision" in said
    assert f"the user {ADMIN} is there already" in said
    assert snapshot(installed.root) == before


def test_reconfigure_writes_it_again_and_keeps_the_old_one(installed: Installed) -> None:
    config = installed.root.upper("/etc/schoolgate/agent.toml")
    old = config.read_text()
    flags = installed.agent_flags()
    flags[flags.index("10.20.0.0/16")] = "10.30.0.0/16"
    said = installed.install("agent", "--no-download", "--reconfigure", *flags)
    assert "the previous configuration is kept as /etc/schoolgate/agent.toml.old" in said
    assert installed.root.upper("/etc/schoolgate/agent.toml.old").read_text() == old
    assert tomllib.loads(config.read_text())["clients"]["networks"][0] == "10.30.0.0/16"
    assert mode_owner(config) == (0o640, "root", "schoolgate")


def test_a_collector_on_postgresql(installed: Installed) -> None:
    """The collector moved to PostgreSQL, in a schema of its own: the venv gains psycopg."""
    reason = postgresql_unreachable()
    if reason is not None:
        pytest.skip(reason)
    schema = "sginstall_" + secrets.token_hex(6)
    admin = open_engine(POSTGRESQL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{POSTGRESQL}?options=-csearch_path%3D{schema}"
    try:
        said = installed.install("collector", "--reconfigure", "--database", url, "--admin", ADMIN)
        assert "the previous configuration is kept as /etc/schoolgate/collector.toml.old" in said
        assert "database upgraded from revision (empty)" in said
        assert "database postgresql://postgres@127.0.0.1:5432/test" in said
        config = installed.root.upper("/etc/schoolgate/collector.toml")
        assert tomllib.loads(config.read_text())["database"] == {"url": url}
        assert mode_owner(config) == (0o640, "root", "schoolgate-collector")
        with admin.connect() as conn:
            tables = conn.execute(
                text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema},
            ).scalar_one()
        assert tables > 10
        # An upgrade finds the PostgreSQL URL in the kept file and keeps psycopg installed.
        said = installed.install("collector")
        assert "the database is at revision" in said
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_uninstall_keeps_the_configuration_data_and_users_and_says_so(
    installed: Installed,
) -> None:
    said = installed.install("agent", "--uninstall")
    assert "removed /etc/systemd/system/schoolgate-agent.service" in said
    assert "kept /opt/schoolgate/venv: schoolgate-collector is still installed" in said
    for kept in (
        "configuration: /etc/schoolgate/agent.toml",
        "configuration: /etc/schoolgate/collector.token",
        "data: /var/lib/schoolgate",
        "user: schoolgate",
    ):
        assert f"  {kept}\n" in said
    written = installed.root.written()
    assert "/etc/systemd/system/schoolgate-agent.service" not in written
    assert "/etc/systemd/system/multi-user.target.wants/schoolgate-agent.service" not in written
    assert "/var/lib/schoolgate/lists/current.sgl" in written
    said = installed.install("collector", "--uninstall")
    assert "removed /opt/schoolgate" in said
    assert not any(name.startswith("/opt/schoolgate") for name in installed.root.written())
    # Installed again, it finds its configuration and data where it left them.
    said = installed.install("agent", "--no-download", *installed.agent_flags())
    assert "kept /etc/schoolgate/agent.toml as it is" in said, said
    assert "installed schoolgate-agent" in said


def test_purge_leaves_nothing_behind(installed: Installed) -> None:
    installed.install("agent", "--uninstall", "--purge")
    installed.install("collector", "--uninstall", "--purge")
    left = {
        name
        for name in installed.root.written()
        if "schoolgate" in name and not installed.root.upper(name).is_char_device()
    }
    assert left == set()
    for table in ("passwd", "group"):
        assert "schoolgate" not in installed.root.upper(f"/etc/{table}").read_text()


def test_the_installer_is_a_program() -> None:
    assert Path(INSTALLER).stat().st_mode & 0o111, "sudo ./install.py needs the executable bit"
    assert Path(INSTALLER).read_text().startswith("#!/usr/bin/env python3\n")


def test_purge_is_only_for_an_uninstall() -> None:
    done = subprocess.run(
        [sys.executable, INSTALLER, "agent", "--purge"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "--purge goes with --uninstall" in done.stdout
