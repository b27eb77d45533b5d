"""The agent and a collector together on one machine, for trying schoolgate out (``./dev run``).

    python -m schoolgate.demo [--state-dir DIR] [--collector-listen ADDR:PORT] [AGENT ARGS...]

1. The collector's database (SQLite) is made, or upgraded, in ``DIR/collector``.
2. A demo school, ``demo-school``, is registered; its token is kept in
   ``DIR/collector/demo-school.token`` (readable by this user only) and made again if that
   file was lost, since the collector keeps only a hash of it.
3. A demo admin, ``demo-admin``, can sign in to the admin pages with the password kept in
   ``DIR/collector/demo-admin.password`` (readable by this user only; a lost file means a new
   account with a new password).
4. The collector runs on ``--collector-listen`` (127.0.0.1:8480), the agent on the bundled
   default configuration (127.0.0.1:5353 and [::1]:5353) shipping its events to it, with its
   metrics on ``--metrics`` (127.0.0.1:9717). Arguments not known here go to
   ``schoolgate-agent run`` (``--listen``, ``--upstream``, ...).
5. Once the agent answers, it says where to point ``dig``, the browser and Prometheus.

Ctrl-C (or SIGTERM) stops both; whichever stops first takes the other with it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from dnslib import DNSRecord
from sqlalchemy import Engine, delete, select, update

from schoolgate.agent.config import parse_address, user_state_dir
from schoolgate.server.auth import Role
from schoolgate.server.db import migrate
from schoolgate.server.db.engine import open_engine
from schoolgate.server.db.schema import Site, User
from schoolgate.server.repository import SqlRepository
from schoolgate.server.tokens import new_token, token_hash
from schoolgate.server.users import UserStore

SITE: Final = "demo-school"
ADMIN: Final = "demo-admin"
COLLECTOR_LISTEN: Final = "127.0.0.1:8480"
METRICS_LISTEN: Final = "127.0.0.1:9717"
AGENT_LISTEN: Final = "127.0.0.1:5353"  # the bundled configuration's first address
_STARTUP_SECONDS: Final = 30.0
# The first start compiles the bundled lists before the agent answers.
_AGENT_STARTUP_SECONDS: Final = 120.0


def _bin(program: str) -> str:
    """The program installed beside this Python (the virtual environment's)."""
    beside = Path(sys.executable).parent / program
    return str(beside) if beside.exists() else program


def prepare_collector(state_dir: Path, listen: str) -> tuple[Path, Path]:
    """The collector's configuration file and the demo school's token file, made as needed."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = state_dir / "collector.toml"
    config.write_text(
        f'[server]\nlisten = "{listen}"\nstate_dir = "{state_dir}"\n', encoding="utf-8"
    )
    token_file = state_dir / f"{SITE}.token"
    engine = open_engine(f"sqlite:///{state_dir / 'collector.sqlite'}")
    try:
        if migrate.current(engine) is None:
            migrate.init(engine)
        else:
            migrate.upgrade(engine)
        _prepare_admin(engine, state_dir / f"{ADMIN}.password")
        repo = SqlRepository(engine)
        with engine.connect() as conn:
            known = conn.execute(select(Site.id).where(Site.name == SITE)).first()
        if known is None:
            _ref, token = repo.add_site(SITE)
        elif token_file.exists():
            return config, token_file
        else:
            # Only the hash is kept: a lost token file means a new token.
            token = new_token()
            with engine.begin() as conn:
                conn.execute(
                    update(Site).where(Site.name == SITE).values(token_hash=token_hash(token))
                )
    finally:
        engine.dispose()
    _write_secret(token_file, token)
    return config, token_file


def _write_secret(path: Path, secret: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secret + "\n")


def _prepare_admin(engine: Engine, password_file: Path) -> None:
    """The demo admin, with a password of its own in ``password_file``."""
    users = UserStore(engine)
    known = any(u.name == ADMIN for u in users.users())
    if known and password_file.exists():
        return
    if known:
        # Only the hash is kept: a lost password file means the account is made again.
        with engine.begin() as conn:
            conn.execute(delete(User).where(User.name == ADMIN))
    password = secrets.token_urlsafe(12)
    users.add(ADMIN, password, Role.ADMIN, [])
    _write_secret(password_file, password)


def _wait_healthy(url: str, collector: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + _STARTUP_SECONDS
    while time.monotonic() < deadline:
        if collector.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:  # noqa: S310
                if answer.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def _wait_answering(host: str, port: int, agent: subprocess.Popen[bytes]) -> bool:
    """True once the agent answers a question on ``host``:``port``."""
    probe = DNSRecord.question("demo-probe.invalid").pack()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + _AGENT_STARTUP_SECONDS
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        while time.monotonic() < deadline:
            if agent.poll() is not None:
                return False
            try:
                sock.sendto(probe, (host, port))
                sock.recvfrom(4096)
                return True
            except OSError:
                time.sleep(0.2)
    return False


def _where(address: str) -> str:
    host, port = parse_address(address)
    return f"{f'[{host}]' if ':' in host else host}:{port}"


def _banner(dns_at: str, url: str, metrics: str, password_file: Path) -> str:
    """Where to point dig, the browser and Prometheus."""
    host, port = parse_address(dns_at)
    dig = f"dig @{host} -p {port}" if port != 53 else f"dig @{host}"
    password = password_file.read_text(encoding="utf-8").strip()
    return "\n".join(
        [
            "schoolgate demo: ready",
            f"  DNS           {dig} www.example.org      (answered)",
            f"                {dig} dns.google           (blocked)",
            f"  admin pages   {url}/   user {ADMIN}, password {password}",
            f"  metrics       http://{_where(metrics)}/metrics (agent), {url}/metrics (collector)",
            "  Ctrl-C stops both.",
        ]
    )


def _agent_listen(agent_args: Sequence[str]) -> str:
    """Where the agent is first asked: the first --listen given to it, or the default's."""
    given = argparse.ArgumentParser(add_help=False)
    given.add_argument("--listen", action="append", default=[])
    known, _ = given.parse_known_args(agent_args)
    return known.listen[0] if known.listen else AGENT_LISTEN


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schoolgate.demo",
        description="Run the agent and a collector together, for trying schoolgate out.",
    )
    parser.add_argument("--state-dir", type=Path, help="where both keep their files")
    parser.add_argument("--collector-listen", default=COLLECTOR_LISTEN, metavar="ADDR:PORT")
    parser.add_argument("--metrics", default=METRICS_LISTEN, metavar="ADDR:PORT")
    args, agent_args = parser.parse_known_args(argv)
    dns_at = _agent_listen(agent_args)
    try:
        url = f"http://{_where(args.collector_listen)}"
        _where(args.metrics)
        dns_host, dns_port = parse_address(dns_at)
    except ValueError as exc:
        parser.error(str(exc))
    base = args.state_dir.resolve() if args.state_dir else None
    collector_dir = base / "collector" if base else user_state_dir("schoolgate-collector")
    config, token_file = prepare_collector(collector_dir, args.collector_listen)

    # Our own programs, with arguments this process made or was given by its user.
    collector = subprocess.Popen([_bin("schoolgate-collector"), "run", "--config", str(config)])  # noqa: S603
    try:
        if not _wait_healthy(url, collector):
            print(
                f"schoolgate demo: the collector did not start on {args.collector_listen} "
                "(is the port taken? choose another with --collector-listen)",
                file=sys.stderr,
            )
            return 1
        print(
            f"schoolgate demo: collector on {url} (site {SITE}, database in {collector_dir});"
            " starting the agent (its first start compiles the lists)",
            file=sys.stderr,
            flush=True,
        )
        command = [
            _bin("schoolgate-agent"),
            "run",
            "--collector",
            url,
            "--site",
            SITE,
            "--token-file",
            str(token_file),
            "--metrics",
            args.metrics,
        ]
        if base is not None:
            command += ["--state-dir", str(base / "agent")]
        agent = subprocess.Popen([*command, *agent_args])  # noqa: S603
        try:
            if _wait_answering(dns_host, dns_port, agent):
                password_file = collector_dir / f"{ADMIN}.password"
                print(
                    _banner(dns_at, url, args.metrics, password_file), file=sys.stderr, flush=True
                )
            return _watch(agent, collector)
        except KeyboardInterrupt:  # Ctrl-C before the agent answered
            return 0
        finally:
            _stop(agent)
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(collector)


def _watch(agent: subprocess.Popen[bytes], collector: subprocess.Popen[bytes]) -> int:
    """Until one of the two stops, or this process is told to: the agent's exit status."""
    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping:
        if agent.poll() is not None:
            return agent.returncode
        if collector.poll() is not None:
            print("schoolgate demo: the collector stopped; stopping the agent", file=sys.stderr)
            return 1
        time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
