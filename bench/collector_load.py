"""How many events a second the collector takes in from 200 schools sending at once.

    .venv/bin/python bench/collector_load.py [--database sqlite|postgresql|both] [--runs 2]
        [--sites 200] [--batch-events 2000] [--batches 8] [--duration 60] [--collectors 1]

For each database and each run, in a fresh database: makes the schema with
``schoolgate-collector init-db``, registers ``--sites`` schools (through the repository, as
``site add`` does, without a process per school), starts ``schoolgate-collector run`` as its
own process (``--collectors N`` starts N of them on N ports over the same database, the
schools spread over them, as N workers behind one address would be), and then has every
school send its batches as fast as the collector answers them: one request at a time per
school, all schools at once, from one asyncio client process (httpx, a connection per school).
A school stops when it has sent its ``--batches`` or ``--duration`` is over; whatever is still
unanswered ``--grace`` seconds later is cut off (and the check below asks the database whether
the collector committed it), so a run never takes more than about two minutes and a half.

The batches are made before the clock starts, the way the agent makes them: its default of
2,000 events a batch, gzipped NDJSON from ``schoolgate.event_batch``, realistic ``dns`` events
(each school has its own devices in four groups, names drawn with Zipf repeats from a shared
pool, about 8% of them blocked with their categories, sequence numbers rising per school, times
within the last hour) and an ``Idempotency-Key`` of the agent's shape, unique per batch.

Reported per run: events the collector confirmed inserted (the ``inserted`` of its answers)
and batches a second, over the steady part of the run (after ``--warmup`` seconds, until the
first school has sent all its batches or ``--duration`` ends) and over the whole run; the
median and 99th percentile of the request latency; the answers other than 200, by status; the
CPU used by the collector, by PostgreSQL's processes, by this client and by everything else
on the machine, in cores; the collector's own mean time in the database per batch (from its
``/metrics``); and a check that the database holds, for every school, exactly the events
the collector said it inserted.

PostgreSQL is ``--postgresql`` (default: the local server, database ``test``); the run uses a
schema of its own, ``--schema`` (default ``bench_collector``), made at the start of each run
and dropped at its end, and touches nothing else. SQLite lives in a temporary directory.
Every process started is stopped when the run ends, fails or is interrupted. Nothing here
runs in CI; tests never assert on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import random
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from gen_lists import NameGenerator, zipf_cum_weights
from procs import ProcessGroup, termination_as_interrupt
from sqlalchemy import bindparam, make_url, text

from schoolgate.agent.activity.events import EventKind
from schoolgate.event_batch import CONTENT_TYPE, ShippedEvent, encode_batch
from schoolgate.server.db.engine import open_engine
from schoolgate.server.repository import SqlRepository

POSTGRESQL = "postgresql://postgres@127.0.0.1:5432/test"
COLLECTOR = [sys.executable, "-m", "schoolgate.server.cli"]
CONFIG = """
[server]
listen = "127.0.0.1:{port}"
state_dir = "{state}"
[database]
url = "{url}"
"""
GROUPS = (("ks1", 20.0), ("ks2", 35.0), ("staff", 30.0), ("guests", 15.0))
QTYPES = (("A", 60.0), ("AAAA", 30.0), ("HTTPS", 10.0))
BLOCK_CATEGORIES = ("adult", "gambling", "social", "games", "proxy", "malware", "violence")
ALLOWED_CATEGORIES = ("search", "education", "news", "video", "shopping")
_BACKEND_CLIENT = re.compile(r"\((\d+)\)")  # "postgres: ... 127.0.0.1(53422) idle"
_SAMPLE = re.compile(r"^(schoolgate_collector_[a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$", re.M)


# --- the batches --------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    key: str
    body: bytes  # gzipped NDJSON
    events: int


@dataclass
class School:
    name: str
    token: str = ""
    batches: list[Batch] = field(default_factory=list)


@functools.cache
def _name_pools(seed: int) -> tuple[list[str], list[tuple[str, tuple[str, ...]]]]:
    """Allowed names (most popular first) and blocked names with their categories."""
    gen = NameGenerator(seed)
    allowed = list(dict.fromkeys(gen.name() for _ in range(6_000)))[:5_000]
    rng = random.Random(seed + 1)
    blocked = []
    for name in dict.fromkeys(gen.name() for _ in range(1_200)):
        first = rng.choice(BLOCK_CATEGORIES)
        more = (rng.choice(BLOCK_CATEGORIES),) if rng.random() < 0.2 else ()
        blocked.append((name, (first, *tuple(c for c in more if c != first))))
    return allowed, blocked[:1_000]


def make_school_batches(
    name: str, index: int, seed: int, batches: int, per_batch: int, now: float
) -> list[Batch]:
    """One school's batches, as its agent would send them, oldest first."""
    rng = random.Random(seed * 1_000_003 + index)
    allowed, blocked = _name_pools(seed)
    allowed_cum = zipf_cum_weights(len(allowed), 1.0)
    blocked_cum = zipf_cum_weights(len(blocked), 1.0)
    group_names = [g for g, _ in GROUPS]
    group_cum = list(_cumulative(w for _, w in GROUPS))
    qtype_names = [q for q, _ in QTYPES]
    qtype_cum = list(_cumulative(w for _, w in QTYPES))
    devices = []
    for d in range(rng.randint(150, 1_500)):
        group = rng.choices(group_names, cum_weights=group_cum)[0]
        mac = ":".join(f"{rng.randrange(256):02x}" for _ in range(6))
        hostname = f"{group}-{rng.choice(('ipad', 'chromebook', 'laptop', 'pc'))}-{d:04d}"
        devices.append(
            (f"10.{index % 250}.{d // 250}.{d % 250 + 2}", mac, hostname if d % 3 else "", group)
        )
    total = batches * per_batch
    start = now - 3_600.0
    step = (3_600.0 - 60.0) / total
    seq = rng.randint(1, 5_000_000)
    store_id = secrets.token_hex(8)
    made: list[Batch] = []
    for _ in range(batches):
        events: list[ShippedEvent] = []
        first = seq
        for _ in range(per_batch):
            ip, mac, hostname, group = devices[rng.randrange(len(devices))]
            when = start + (seq - first + len(made) * per_batch) * step
            cache_hit = rng.random() < 0.7
            r = rng.random()
            if r < 0.08:
                name_asked, categories = rng.choices(blocked, cum_weights=blocked_cum)[0]
                action, rule, rcode = "block", "category", "NOERROR"
            else:
                name_asked = rng.choices(allowed, cum_weights=allowed_cum)[0]
                categories = (rng.choice(ALLOWED_CATEGORIES),) if r < 0.3 else ()
                action, rule = "allow", "category allowed" if categories else ""
                rcode = "NOERROR" if rng.random() < 0.97 else "NXDOMAIN"
            event = ShippedEvent(
                seq=seq,
                kind=EventKind.DNS,
                time=round(when, 6),
                client_ip=ip,
                mac=mac,
                hostname=hostname,
                group=group,
                name=name_asked,
                qtype=rng.choices(qtype_names, cum_weights=qtype_cum)[0],
                action=action,
                categories=categories,
                rule=rule,
                rcode=rcode,
                latency_ms=round(rng.uniform(0.05, 0.4) if cache_hit else rng.uniform(4, 90), 3),
                cache_hit=cache_hit,
            )
            events.append(event)
            seq += 1
        body = encode_batch(events)
        digest = hashlib.sha256(body).hexdigest()[:16]
        key = f"{name}:{store_id}:dns:{first}-{seq - 1}:{len(events)}:{digest}"
        made.append(Batch(key, body, len(events)))
    return made


def _cumulative(weights: Iterator[float]) -> Iterator[float]:
    total = 0.0
    for w in weights:
        total += w
        yield total


def _school_job(args: tuple[str, int, int, int, int, float]) -> list[Batch]:
    return make_school_batches(*args)


def make_schools(sites: int, batches: int, per_batch: int, seed: int) -> list[School]:
    """Every school's batches, made in a process per core."""
    now = time.time()
    names = [f"school-{i:03d}" for i in range(sites)]
    jobs = [(name, i, seed, batches, per_batch, now) for i, name in enumerate(names)]
    with ProcessPoolExecutor(max_workers=psutil.cpu_count() or 2) as pool:
        made = list(pool.map(_school_job, jobs, chunksize=4))
    return [School(name, batches=b) for name, b in zip(names, made, strict=True)]


# --- the database and the collector -------------------------------------------------------


def _with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@contextmanager
def database(kind: str, work: Path, postgresql: str, schema: str) -> Iterator[str]:
    """A fresh, empty database's URL; a PostgreSQL schema is dropped afterwards."""
    if kind == "sqlite":
        path = work / f"collector-{secrets.token_hex(4)}.sqlite"
        yield f"sqlite:///{path}"
        for leftover in work.glob(path.name + "*"):
            leftover.unlink()
        return
    admin = open_engine(postgresql)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        try:
            yield _with_schema(postgresql, schema)
        finally:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    finally:
        admin.dispose()


def set_up(url: str, config: Path, schools: list[School]) -> None:
    """``init-db`` through the CLI, then every school registered with a token."""
    subprocess.run(
        [*COLLECTOR, "init-db", "--config", str(config)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    engine = open_engine(url)
    try:
        repo = SqlRepository(engine)
        for school in schools:
            _site, school.token = repo.add_site(school.name)
    finally:
        engine.dispose()


def held_per_site(url: str) -> dict[str, int]:
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT s.name, count(e.seq) FROM sites s "
                    "LEFT JOIN events e ON e.site_id = s.id GROUP BY s.name"
                )
            )
            return {name: int(n) for name, n in rows}
    finally:
        engine.dispose()


def committed(url: str, batches: list[Batch]) -> dict[str, int]:
    """Of ``batches``, those the collector recorded, with the events it inserted."""
    if not batches:
        return {}
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT key, inserted FROM ingest_batches WHERE key IN :keys").bindparams(
                    bindparam("keys", expanding=True)
                ),
                {"keys": [b.key for b in batches]},
            )
            return {key: int(n) for key, n in rows}
    finally:
        engine.dispose()


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def collector_metrics(port: int) -> dict[str, float]:
    """Each collector metric summed over its labels."""
    found: dict[str, float] = {}
    page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for name, value in _SAMPLE.findall(page):
        found[name] = found.get(name, 0.0) + float(value)
    return found


# --- the load -----------------------------------------------------------------------------


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    answers: list[tuple[float, int]] = field(default_factory=list)  # (when, inserted)
    statuses: Counter[str] = field(default_factory=Counter)
    inserted: Counter[str] = field(default_factory=Counter)
    not_inserted: int = 0  # events of accepted batches the collector did not insert
    unconfirmed: int = 0  # batches answered as replays after a lost answer: fate unknown
    in_flight: dict[str, Batch] = field(default_factory=dict)  # left unanswered at the end
    first_done: float = float("inf")


async def send_school(
    client: httpx.AsyncClient, url: str, school: School, deadline: float, tally: Tally
) -> None:
    """Send the school's batches one after the other, as its agent's uploader does."""
    for batch in school.batches:
        if time.monotonic() >= deadline:
            break
        headers = {
            "Authorization": f"Bearer {school.token}",
            "Idempotency-Key": batch.key,
            "Content-Type": CONTENT_TYPE,
            "Content-Encoding": "gzip",
        }
        lost_answer = False
        tally.in_flight[school.name] = batch
        while True:
            started = time.perf_counter()
            try:
                answer = await client.post(url, content=batch.body, headers=headers)
            except httpx.HTTPError as exc:
                tally.statuses[type(exc).__name__] += 1
                lost_answer = True
                await asyncio.sleep(1.0)
                continue
            tally.latencies.append(time.perf_counter() - started)
            status = answer.status_code
            if status == 200:
                tally.statuses["200"] += 1
                result = answer.json()
                if result["replayed"] and lost_answer:
                    tally.unconfirmed += 1
                inserted = int(result["inserted"])
                tally.inserted[school.name] += inserted
                tally.not_inserted += batch.events - inserted
                tally.answers.append((time.monotonic(), inserted))
                break
            tally.statuses[str(status)] += 1
            if status in (429, 503):
                await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
                continue
            break
        del tally.in_flight[school.name]
    tally.first_done = min(tally.first_done, time.monotonic())


async def load(
    schools: list[School], ports: list[int], duration: float, grace: float
) -> tuple[Tally, float]:
    """Every school at once for ``duration`` s; what is unanswered ``grace`` s later is cut off."""
    tally = Tally()
    limits = httpx.Limits(max_connections=len(schools), max_keepalive_connections=len(schools))
    timeout = httpx.Timeout(duration + grace, connect=10.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        started = time.monotonic()
        deadline = started + duration
        tasks = [
            asyncio.create_task(
                send_school(
                    client,
                    f"http://127.0.0.1:{ports[i % len(ports)]}/api/v1/events",
                    school,
                    deadline,
                    tally,
                )
            )
            for i, school in enumerate(schools)
        ]
        _done, pending = await asyncio.wait(tasks, timeout=duration + grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return tally, started


# --- one run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuMark:
    wall: float
    client: float
    collectors: float
    machine_busy: float


def machine_busy() -> float:
    """CPU seconds this machine's cores have spent busy since boot (not the time the
    hypervisor gave to other machines)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq)


class PostgresWatch:
    """The CPU time of the collectors' PostgreSQL backends (and of the server's own background
    processes) over a run, sampled every ``every`` seconds.

    Backends serving anyone else (a test suite on the same server, say) are left out: a
    backend's title names its client's port, and only the collectors' ports count. The
    collector's pool closes the connections it opened beyond its size as they come back, and a
    backend's CPU time goes with its process, so reading the processes only at the start and
    the end would miss it; a backend that comes and goes between two samples is missed.
    """

    def __init__(self, collectors: list[psutil.Process], port: int, every: float = 0.25) -> None:
        self._collectors = collectors
        self._port = port
        self._every = every
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="postgres-cpu", daemon=True)

    def _client_ports(self) -> set[int]:
        ports: set[int] = set()
        for proc in self._collectors:
            try:
                connections = proc.net_connections(kind="tcp")
            except psutil.Error:
                continue
            ports.update(c.laddr.port for c in connections if c.raddr and c.raddr[1] == self._port)
        return ports

    def _sample(self, at_start: bool) -> None:
        ours = self._client_ports()
        for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
            used = proc.info["cpu_times"]
            if proc.info["name"] not in ("postgres", "postmaster") or used is None:
                continue
            client = _BACKEND_CLIENT.search(" ".join(proc.info["cmdline"] or ()))
            if client is not None and int(client.group(1)) not in ours:
                continue
            seconds = used.user + used.system
            # A process first seen after the start spent all its time during the run.
            self._first.setdefault(proc.pid, seconds if at_start else 0.0)
            self._last[proc.pid] = seconds

    def _watch(self) -> None:
        while not self._stop.wait(self._every):
            self._sample(at_start=False)

    def __enter__(self) -> PostgresWatch:
        self._sample(at_start=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(at_start=False)

    @property
    def seconds(self) -> float:
        return sum(last - self._first[pid] for pid, last in self._last.items())


def cpu_mark(collectors: list[psutil.Process]) -> CpuMark:
    own = psutil.Process().cpu_times()
    served = 0.0
    for proc in collectors:
        t = proc.cpu_times()
        served += t.user + t.system
    return CpuMark(
        time.monotonic(),
        own.user + own.system,
        served,
        machine_busy(),
    )


def percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def one_run(
    kind: str, run: int, schools: list[School], opts: argparse.Namespace, work: Path
) -> list[str]:
    with (
        database(kind, work, opts.postgresql, opts.schema) as url,
        ProcessGroup() as group,
    ):
        ports = [_free_port() for _ in range(opts.collectors)]
        configs = []
        for i, port in enumerate(ports):
            config = work / f"collector-{i}.toml"
            config.write_text(
                CONFIG.format(port=port, state=work / "state", url=url), encoding="utf-8"
            )
            configs.append(config)
        set_up(url, configs[0], schools)
        procs = [
            group.start(
                f"collector-{i}",
                [*COLLECTOR, "run", "--config", str(config)],
                work / f"collector-{kind}-{run}-{i}.log",
            )
            for i, config in enumerate(configs)
        ]
        deadline = time.monotonic() + 60
        while not all(healthy(port) for port in ports):
            if time.monotonic() > deadline or not all(p.alive() for p in procs):
                tails = "\n".join(p.log_tail() for p in procs)
                raise RuntimeError(f"the collector did not start:\n{tails}")
            time.sleep(0.1)
        served = [psutil.Process(p.pid) for p in procs]
        metrics_before = [collector_metrics(port) for port in ports]
        with PostgresWatch(served, make_url(opts.postgresql).port or 5432) as postgres:
            before = cpu_mark(served)
            tally, started = asyncio.run(load(schools, ports, opts.duration, opts.grace))
            after = cpu_mark(served)
        metrics_after = [collector_metrics(port) for port in ports]
        for proc in procs:
            group.stop(proc)
        held = held_per_site(url)
        cut_off = committed(url, list(tally.in_flight.values()))
    wall = after.wall - before.wall
    steady_from = started + min(opts.warmup, opts.duration / 4)
    steady_to = min(started + opts.duration, tally.first_done)
    steady = [n for when, n in tally.answers if steady_from <= when <= steady_to]
    steady_s = max(steady_to - steady_from, 1e-9)
    total = sum(n for _, n in tally.answers)
    insert_sum = sum(
        a.get("schoolgate_collector_insert_seconds_sum", 0.0)
        - b.get("schoolgate_collector_insert_seconds_sum", 0.0)
        for a, b in zip(metrics_after, metrics_before, strict=True)
    )
    insert_count = sum(
        a.get("schoolgate_collector_insert_seconds_count", 0.0)
        - b.get("schoolgate_collector_insert_seconds_count", 0.0)
        for a, b in zip(metrics_after, metrics_before, strict=True)
    )
    # The batches cut off unanswered count when the collector committed them before it stopped.
    expected = Counter(tally.inserted)
    for name, batch in tally.in_flight.items():
        expected[name] += cut_off.get(batch.key, 0)
    wrong = [s.name for s in schools if held.get(s.name, -1) != expected[s.name]]
    check = (
        f"ok, {sum(held.values()):,} rows"
        if not wrong and not tally.not_inserted
        else f"{len(wrong)} sites differ; {tally.not_inserted:,} not inserted"
    )
    if tally.in_flight:
        check += (
            f"; {len(tally.in_flight)} batches cut off unanswered, {len(cut_off)} of them committed"
        )
    if tally.unconfirmed:
        check += f"; {tally.unconfirmed} batches unconfirmed"
    others = {k: v for k, v in tally.statuses.items() if k != "200"}

    def cores(a: float, b: float) -> str:
        return f"{(a - b) / wall:.2f}"

    other = (after.machine_busy - before.machine_busy) - (
        (after.client - before.client) + (after.collectors - before.collectors) + postgres.seconds
    )
    return [
        kind,
        str(run),
        str(opts.collectors),
        f"{len(tally.latencies):,}",
        f"{total:,}",
        f"{sum(steady) / steady_s:,.0f}",
        f"{total / wall:,.0f}",
        f"{len(steady) / steady_s:,.1f}",
        f"{percentile(tally.latencies, 0.5) * 1000:,.0f}",
        f"{percentile(tally.latencies, 0.99) * 1000:,.0f}",
        ", ".join(f"{k}: {v}" for k, v in sorted(others.items())) or "none",
        cores(after.collectors, before.collectors),
        f"{postgres.seconds / wall:.2f}" if kind == "postgresql" else "-",
        cores(after.client, before.client),
        f"{max(other, 0.0) / wall:.2f}",
        f"{insert_sum / insert_count * 1000:,.0f}" if insert_count else "-",
        check,
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


HEADER = (
    "database",
    "run",
    "collectors",
    "requests",
    "events inserted",
    "events/s steady",
    "events/s overall",
    "batches/s steady",
    "p50 ms",
    "p99 ms",
    "other answers",
    "collector cores",
    "postgres cores",
    "client cores",
    "other cores",
    "DB ms/batch",
    "DB check",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--runs", type=int, default=2, help="runs of each database")
    parser.add_argument("--sites", type=int, default=200, help="schools sending at once")
    parser.add_argument(
        "--batch-events", type=int, default=2_000, help="events a batch (the agent's default)"
    )
    parser.add_argument(
        "--batches", type=int, default=8, help="batches made for each school before the run"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of sending, at most")
    parser.add_argument(
        "--grace",
        type=float,
        default=60.0,
        help="seconds allowed after --duration for the last answers; then requests are cut off",
    )
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds left out of 'steady'")
    parser.add_argument(
        "--collectors", type=int, default=1, help="collector processes, on ports of their own"
    )
    parser.add_argument("--postgresql", default=POSTGRESQL, help="PostgreSQL URL")
    parser.add_argument("--schema", default="bench_collector", help="made and dropped each run")
    parser.add_argument("--seed", type=int, default=1)
    opts = parser.parse_args(argv)
    kinds = ["sqlite", "postgresql"] if opts.database == "both" else [opts.database]

    began = time.perf_counter()
    schools = make_schools(opts.sites, opts.batches, opts.batch_events, opts.seed)
    batches = [b for s in schools for b in s.batches]
    gz = sum(len(b.body) for b in batches)
    events = sum(b.events for b in batches)
    print(
        f"{len(schools)} schools, {len(batches):,} batches of {opts.batch_events:,} events "
        f"made in {time.perf_counter() - began:.1f} s ({gz / len(batches) / 1024:.0f} KiB "
        f"gzipped a batch, {gz / events:.0f} bytes an event); load average "
        f"{', '.join(f'{x:.2f}' for x in psutil.getloadavg())}\n"
    )
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    try:
        with (
            termination_as_interrupt(),
            tempfile.TemporaryDirectory(prefix="sg-collector-") as tmp,
        ):
            for kind in kinds:
                for run in range(1, opts.runs + 1):
                    row = one_run(kind, run, schools, opts, Path(tmp))
                    print("| " + " | ".join(row) + " |", flush=True)
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
