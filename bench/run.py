"""Benchmark schoolgate against dnsmasq (Pi-hole style) and unbound, on one machine.

Usage: python bench/run.py [--names 1000000] [--servers dnsmasq,unbound,schoolgate] [--reload]

See bench/README.md for what is measured and how to read the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

import gen_lists
from dnsprobe import TYPE_A, TYPE_AAAA, Answer, query
from gen_lists import UPSTREAM_A, DataSet
from perf import PerfResult, PerfSettings, run_dnsperf
from procs import (
    Proc,
    ProcessGroup,
    all_cpu_ticks,
    cpu_seconds,
    other_cpu_seconds,
    pinned,
    port_free,
    status_kib,
    termination_as_interrupt,
    tree_kib,
    wait_exit,
)
from report import ServerResult, details, markdown_table
from servers import SERVERS, Context, ServerSpec, install_list, nsd_argv, without_flag

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RELOAD_FROM = 1_000_000
RELOAD_TO = 5_000_000
# An uncapped run where the server used less of its core than this was probably limited by
# the client side (dnsperf and the upstream share the other core), not by the server.
SATURATED_CPU = 0.85
# Other processes using more than this share of a core during a run make its figures suspect.
DISTURBED_CPU = 0.1
# The floor NSD listens well above the servers' ports (base-port + index).
FLOOR_PORT_OFFSET = 9


@dataclass(frozen=True)
class Options:
    names: int
    seed: int
    servers: list[str]
    duration: float
    warmup: float
    rates: list[int]
    reload: bool
    floor: bool
    upstream_port: int
    base_port: int
    server_core: int | None
    client_core: int | None
    startup_timeout: float
    outstanding: int
    clients: int
    idle_wait: float
    data_dir: Path
    out_dir: Path


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description="DNS filter benchmark (run by hand, not in CI)")
    parser.add_argument("--names", type=int, default=1_000_000, help="block list size")
    parser.add_argument("--seed", type=int, default=gen_lists.DEFAULT_SEED)
    parser.add_argument(
        "--servers",
        default="schoolgate,dnsmasq,unbound",
        help="comma-separated, from: " + ", ".join(SERVERS),
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=15.0,
        help="seconds per measured dnsperf run (10..20 keeps a run short)",
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of hit-mix warm-up")
    parser.add_argument("--rates", default="2000,10000", help="fixed query rates for latency")
    parser.add_argument(
        "--reload",
        action="store_true",
        help="also measure a 1M -> 5M list reload (implied by --names 5000000)",
    )
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the bare-nsd reference runs on the server core",
    )
    parser.add_argument("--upstream-port", type=int, default=5400)
    parser.add_argument(
        "--base-port", type=int, default=5410, help="servers listen on base-port + their index"
    )
    parser.add_argument("--server-core", type=int, default=1)
    parser.add_argument(
        "--client-core", type=int, default=0, help="core for dnsperf and the upstream"
    )
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=60.0,
        help="before each run, wait up to this many seconds for other load to stop",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    # 100 in flight stays under dnsmasq's default limit of 150 forwarded queries; 4 sockets
    # get a single dnsperf about 10 % closer to its ceiling than 1.
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf -c")
    parser.add_argument("--data-dir", type=Path, default=BENCH_DIR / "data")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "out")
    args = parser.parse_args(argv)

    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s): {', '.join(unknown)}")
    server_core, client_core = pick_cores(args.server_core, args.client_core, args.no_pin)
    return Options(
        names=args.names,
        seed=args.seed,
        servers=servers,
        duration=args.duration,
        warmup=args.warmup,
        rates=[int(r) for r in args.rates.split(",") if r],
        reload=args.reload or args.names >= RELOAD_TO,
        floor=not args.no_floor,
        upstream_port=args.upstream_port,
        base_port=args.base_port,
        server_core=server_core,
        client_core=client_core,
        startup_timeout=args.startup_timeout,
        outstanding=args.outstanding,
        clients=args.clients,
        idle_wait=args.idle_wait,
        data_dir=args.data_dir,
        out_dir=args.out_dir,
    )


def pick_cores(server: int, client: int, no_pin: bool) -> tuple[int | None, int | None]:
    """Pinning only means something with two distinct usable cores."""
    usable = os.sched_getaffinity(0)
    if no_pin or server == client or not {server, client} <= usable:
        if not no_pin:
            log(f"not pinning: cores {server} and {client} are not both usable ({usable})")
        return None, None
    return server, client


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def blocks(answer: Answer | None) -> bool:
    """A real answer that did not come from the upstream's wildcard: the list is in force."""
    return (
        answer is not None
        and answer.rcode in ("NOERROR", "NXDOMAIN")
        and UPSTREAM_A not in answer.addresses
    )


class StartFailed(RuntimeError):
    """The server exited or never answered; carries its log tail."""


def wait_ready(proc: Proc, port: int, probe: str, timeout: float, started: float) -> float:
    """Seconds from start until the server answers the probe with its list in force.

    The probe is a listed name, so an answer carrying the upstream's wildcard address means
    the server is up but has not loaded its list yet, which does not count as ready.
    """
    while time.monotonic() - started < timeout:
        if not proc.alive():
            raise StartFailed(f"exited with code {proc.popen.returncode}:\n{proc.log_tail()}")
        answer = query(port, probe, TYPE_A, timeout=0.1)
        if blocks(answer):
            return time.monotonic() - started
        if answer is None:
            time.sleep(0.005)
    raise StartFailed(f"no blocked answer within {timeout:.0f} s:\n{proc.log_tail()}")


def rejected_flag(spec: ServerSpec, argv: list[str], log_text: str) -> str | None:
    """An optional flag the server refused (argparse says 'unrecognized arguments: --x')."""
    for flag in spec.optional_flags:
        if flag in argv and flag in log_text and "unrecognized" in log_text:
            return flag
    return None


def start_ready(
    group: ProcessGroup,
    spec: ServerSpec,
    argv: list[str],
    opts: Options,
    port: int,
    probe: str,
    log_path: Path,
    notes: list[str],
) -> tuple[Proc, float, list[str]]:
    """Start the server and wait until it blocks; retries without refused optional flags."""
    while True:
        if not port_free(port):
            raise StartFailed(f"UDP port {port} is already in use")
        started = time.monotonic()
        proc = group.start(spec.name, pinned(opts.server_core, argv), log_path)
        try:
            return proc, wait_ready(proc, port, probe, opts.startup_timeout, started), argv
        except StartFailed:
            group.stop(proc)
            flag = rejected_flag(spec, argv, proc.log_tail(40))
            if flag is None:
                raise
            notes.append(f"{flag} was rejected; ran without it")
            log(f"{spec.name}: {flag} rejected, retrying without it")
            argv = without_flag(argv, flag)


def probe_answers(port: int, data: DataSet) -> dict[str, str]:
    """How the server answers a listed name, a name below one, and an allowed name."""
    probes = {
        "listed A": (data.probe_blocked, TYPE_A),
        "listed AAAA": (data.probe_blocked, TYPE_AAAA),
        "below listed A": (data.probe_blocked_sub, TYPE_A),
        "allowed A": (data.probe_allowed, TYPE_A),
    }
    out: dict[str, str] = {}
    for label, (name, qtype) in probes.items():
        answer = query(port, name, qtype, timeout=2.0)
        out[label] = answer.describe() if answer else "no answer"
    return out


def load_runs(
    group: ProcessGroup, opts: Options, perf: PerfSettings, port: int, pid: int, data: DataSet
) -> dict[str, PerfResult]:
    hits = data.path(opts.data_dir, "hits")
    misses = data.path(opts.data_dir, "misses")
    runs: dict[str, PerfResult] = {}

    def step(key: str, datafile: Path, seconds: float, **kw: Any) -> None:
        settle(group, opts)
        server_idle(pid)
        log(f"  {key}: dnsperf {seconds:g} s")
        runs[key] = run_dnsperf(group, perf, key, port, datafile, seconds, server_pid=pid, **kw)
        log(
            f"  {key}: {runs[key].qps:,.0f} qps, lost {runs[key].lost:,}, "
            f"server CPU {runs[key].server_cpu:.0%}"
        )

    # Warm-up fills the cache, so "hits" measures the cached path only.
    step("warmup", hits, opts.warmup)
    step("hits", hits, opts.duration)
    for rate in opts.rates:
        step(f"rate{rate}", hits, opts.duration, qps=rate, verbose=True)
    step("misses", misses, opts.duration, once=True)
    return runs


def check_runs(result: ServerResult, data: DataSet) -> None:
    """Notes for figures that measured something other than the server."""
    for key, run in result.runs.items():
        if run.other_cpu > DISTURBED_CPU:
            result.notes.append(
                f"{key}: other processes used {run.other_cpu:.0%} of a core meanwhile, so "
                "this figure is disturbed; rerun on an idle machine"
            )
        elif key in ("hits", "misses") and run.server_cpu < SATURATED_CPU:
            result.notes.append(
                f"{key}: server used {run.server_cpu:.0%} of its core, so the client side "
                "may have been the limit"
            )
    misses = result.runs.get("misses")
    if misses and misses.sent >= data.miss_queries:
        result.notes.append("misses: the miss file ran out before the time limit")


def bench_server(
    group: ProcessGroup,
    ctx: Context,
    opts: Options,
    perf: PerfSettings,
    data: DataSet,
    spec: ServerSpec,
    port: int,
    logs: Path,
) -> ServerResult:
    result = ServerResult(spec.name, notes=list(spec.notes))
    reason = spec.available()
    if reason:
        result.status = f"skipped: {reason}"
        log(f"{spec.name}: {result.status}")
        return result
    home = ctx.workdir / spec.name
    home.mkdir(parents=True, exist_ok=True)
    list_path = home / f"list.{spec.list_field}"
    install_list(list_path, data.path(opts.data_dir, spec.list_field))
    log_path = logs / f"{spec.name}.log"
    proc: Proc | None = None
    try:
        started = prepared_start(
            group, ctx, opts, spec, port, home, list_path, log_path, data, result.notes
        )
        proc = started.proc
        result.compile_s, result.first_start_s = started.compile_s, started.first_start_s
        result.startup_s = started.startup_s
        log(f"{spec.name}: answering after {result.startup_s:.2f} s")
        result.rss_idle_mb = tree_kib(proc.pid) / 1024
        result.probes = probe_answers(port, data)
        result.runs = load_runs(group, opts, perf, port, proc.pid, data)
        result.rss_mb = tree_kib(proc.pid) / 1024
        if not proc.alive():
            raise StartFailed(f"died during the load runs:\n{proc.log_tail()}")
        check_runs(result, data)
    except (RuntimeError, OSError) as exc:
        result.status = f"failed: {exc}"
        log(f"{spec.name}: {result.status}")
    finally:
        if proc is not None:
            group.stop(proc)
    return result


@dataclass
class Started:
    proc: Proc
    startup_s: float
    compile_s: float = math.nan
    first_start_s: float = math.nan


def run_compile(
    group: ProcessGroup, argv: list[str], opts: Options, log_path: Path, notes: list[str]
) -> float | None:
    """Seconds the server's own compile command took, or None (with a note) if it failed."""
    started = time.monotonic()
    proc = group.start("compile", pinned(opts.server_core, argv), log_path)
    code = wait_exit(proc, opts.startup_timeout)
    seconds = time.monotonic() - started
    tail = proc.log_tail()
    group.stop(proc)
    if code == 0:
        return seconds
    notes.append(f"list compile command failed ({code}); used a warm-up start instead: {tail}")
    return None


def prepared_start(
    group: ProcessGroup,
    ctx: Context,
    opts: Options,
    spec: ServerSpec,
    port: int,
    home: Path,
    list_path: Path,
    log_path: Path,
    data: DataSet,
    notes: list[str],
) -> Started:
    """Do one-off list compilation first, so the timed start is the one a reboot would see."""
    argv = spec.argv(ctx, port, list_path, home)
    compile_s: float | None = None
    first_start_s = math.nan
    if spec.compile_argv is not None:
        log(f"{spec.name}: compiling the list")
        compile_s = run_compile(
            group, spec.compile_argv(ctx, list_path, home), opts, log_path, notes
        )
    if spec.warm_start and compile_s is None:
        log(f"{spec.name}: warm-up start (compiles the list)")
        proc, first_start_s, argv = start_ready(
            group, spec, argv, opts, port, data.probe_blocked, log_path, notes
        )
        group.stop(proc)
    log(f"{spec.name}: starting on port {port}")
    proc, startup_s, argv = start_ready(
        group, spec, argv, opts, port, data.probe_blocked, log_path, notes
    )
    return Started(proc, startup_s, math.nan if compile_s is None else compile_s, first_start_s)


def first_new_name(big: DataSet, small: DataSet, data_dir: Path) -> str:
    """A name in the big list but not the small one (the small list is its prefix)."""
    with big.path(data_dir, "domains").open() as fh:
        line = next(islice(fh, small.names, None))
    return line.strip()


@dataclass
class ReloadWait:
    seconds: float
    answered: int
    polls: int
    peak_tree_kib: int


def wait_blocked(proc: Proc, port: int, name: str, timeout: float) -> ReloadWait:
    """Poll until name is blocked; counts answered polls and samples the tree's peak RSS.

    The peak is sampled rather than read from VmHWM because a server may build the new list
    in a helper process, whose memory VmHWM of the main process would not show.
    """
    started = time.monotonic()
    answered = polls = peak = 0
    while time.monotonic() - started < timeout:
        if not proc.alive():
            raise StartFailed(f"exited during reload:\n{proc.log_tail()}")
        peak = max(peak, tree_kib(proc.pid))
        answer = query(port, name, TYPE_A, timeout=0.1)
        polls += 1
        if answer:
            answered += 1
            if blocks(answer):
                return ReloadWait(time.monotonic() - started, answered, polls, peak)
        time.sleep(0.01)
    raise StartFailed(f"reloaded list not in force after {timeout:.0f} s")


def reload_test(
    group: ProcessGroup,
    ctx: Context,
    opts: Options,
    perf: PerfSettings,
    spec: ServerSpec,
    port: int,
    logs: Path,
    result: ServerResult,
) -> None:
    """RSS before and after swapping the 1M list for the 5M one and sending SIGHUP."""
    small = gen_lists.ensure(RELOAD_FROM, opts.seed, opts.data_dir, log)
    big = gen_lists.ensure(RELOAD_TO, opts.seed, opts.data_dir, log)
    home = ctx.workdir / f"{spec.name}-reload"
    home.mkdir(parents=True, exist_ok=True)
    list_path = home / f"list.{spec.list_field}"
    install_list(list_path, small.path(opts.data_dir, spec.list_field))
    log_path = logs / f"{spec.name}-reload.log"
    proc: Proc | None = None
    try:
        proc = prepared_start(
            group, ctx, opts, spec, port, home, list_path, log_path, small, result.notes
        ).proc
        # A short burst of traffic so the "before" figure includes a populated cache.
        run_dnsperf(
            group,
            perf,
            "reload-warmup",
            port,
            small.path(opts.data_dir, "hits"),
            opts.warmup,
            server_pid=proc.pid,
        )
        before = tree_kib(proc.pid) / 1024
        install_list(list_path, big.path(opts.data_dir, spec.list_field))
        os.kill(proc.pid, signal.SIGHUP)
        wait = wait_blocked(
            proc, port, first_new_name(big, small, opts.data_dir), opts.startup_timeout
        )
        time.sleep(1.0)  # let a reload that swaps structures in the background settle
        result.reload = {
            "from_names": small.names,
            "to_names": big.names,
            "rss_before_mb": round(before, 1),
            "rss_after_mb": round(tree_kib(proc.pid) / 1024, 1),
            "peak_rss_sampled_mb": round(wait.peak_tree_kib / 1024, 1),
            "main_vmhwm_mb": round(status_kib(proc.pid, "VmHWM") / 1024, 1),
            "reload_s": round(wait.seconds, 2),
            "polls_answered_during_reload": f"{wait.answered}/{wait.polls}",
        }
        log(f"{spec.name}: reload {result.reload}")
    except (RuntimeError, OSError) as exc:
        result.reload = {"status": f"failed: {exc}"}
        log(f"{spec.name}: reload failed: {exc}")
    finally:
        if proc is not None:
            group.stop(proc)


def start_nsd(
    group: ProcessGroup,
    name: str,
    home: Path,
    port: int,
    core: int | None,
    probe: str,
    log_path: Path,
) -> Proc:
    """NSD answering every name from its wildcard; returns once it does."""
    if not port_free(port):
        raise StartFailed(f"{name} port {port} is already in use")
    started = time.monotonic()
    proc = group.start(name, pinned(core, nsd_argv(home, port)), log_path)
    while time.monotonic() - started < 30:
        if not proc.alive():
            raise StartFailed(f"{name} exited:\n{proc.log_tail()}")
        answer = query(port, probe, TYPE_A, timeout=0.1)
        if answer and UPSTREAM_A in answer.addresses:
            return proc
        time.sleep(0.02)
    raise StartFailed(f"{name} did not answer within 30 s")


def measure_floor(
    group: ProcessGroup,
    ctx: Context,
    opts: Options,
    perf: PerfSettings,
    data: DataSet,
    port: int,
    logs: Path,
) -> ServerResult:
    """The hit-mix runs against a bare NSD on the server core: what the setup itself costs.

    No server can beat these figures here. On a VM, waking an idle vCPU for each packet adds
    latency that shows up in p99 at low rates, and this row shows how much.
    """
    result = ServerResult("floor: nsd, no filter", status="reference")
    proc = start_nsd(
        group,
        "floor",
        ctx.workdir / "floor",
        port,
        opts.server_core,
        data.probe_allowed,
        logs / "floor.log",
    )
    try:
        hits = data.path(opts.data_dir, "hits")
        log("floor: bare nsd on the server core")
        settle(group, opts)
        result.runs["hits"] = run_dnsperf(
            group, perf, "hits", port, hits, opts.duration, server_pid=proc.pid
        )
        for rate in opts.rates:
            settle(group, opts)
            result.runs[f"rate{rate}"] = run_dnsperf(
                group,
                perf,
                f"rate{rate}",
                port,
                hits,
                opts.duration,
                qps=rate,
                verbose=True,
                server_pid=proc.pid,
            )
        result.rss_mb = tree_kib(proc.pid) / 1024
        check_runs(result, data)
    finally:
        group.stop(proc)
    return result


def tool_versions() -> dict[str, str]:
    commands = {
        "dnsperf": ["dnsperf", "-h"],
        "dnsmasq": ["dnsmasq", "--version"],
        "unbound": ["unbound", "-V"],
        "nsd": ["nsd", "-v"],
    }
    versions: dict[str, str] = {}
    for name, argv in commands.items():
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            versions[name] = "missing"
            continue
        text = out.stdout + out.stderr
        versions[name] = next((ln.strip() for ln in text.splitlines() if "ersion" in ln), "?")
    return versions


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def json_safe(value: Any) -> Any:
    """NaN is not JSON; write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def repo_relative(text: str) -> str:
    """Results get shared; paths in them are written relative to the repository root."""
    return text.replace(f"{REPO_DIR}/", "")


def write_outputs(
    opts: Options,
    stamp: str,
    results: list[ServerResult],
    upstream: PerfResult | None,
    markdown: str,
) -> tuple[Path, Path]:
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    base = opts.out_dir / f"results-{opts.names}-{stamp}"
    raw = {
        "started": stamp,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "kernel": platform.release()},
        "versions": tool_versions(),
        "upstream_capacity": asdict(upstream) if upstream else None,
        "results": [asdict(r) for r in results],
    }
    json_path = base.with_suffix(".json")
    json_path.write_text(repo_relative(json.dumps(json_safe(raw), indent=2)) + "\n")
    md_path = base.with_suffix(".md")
    md_path.write_text(repo_relative(markdown) + "\n")
    return json_path, md_path


def render(opts: Options, results: list[ServerResult], upstream: PerfResult | None) -> str:
    pinning = (
        f"servers on core {opts.server_core}, dnsperf and upstream on core {opts.client_core}"
        if opts.server_core is not None
        else "no pinning"
    )
    lines = [
        f"# DNS filter benchmark, {opts.names:,} listed names",
        "",
        f"{pinning}; {opts.duration:g} s per run; latency at fixed rates "
        f"{', '.join(f'{r:,}' for r in opts.rates)} qps on the hit mix. "
        "Ratios are schoolgate's value divided by the peer's (qps: higher is better; "
        "latency, start-up and RSS: lower is better).",
        "",
        markdown_table(results),
        "",
    ]
    disturbed = [
        f"{r.name} {key}"
        for r in results
        for key, run in r.runs.items()
        if run.other_cpu > DISTURBED_CPU
    ]
    if disturbed:
        lines += [f"**Disturbed by other load on the machine:** {', '.join(disturbed)}.", ""]
    if upstream:
        lines += [
            f"Upstream alone (miss mix, {upstream.run_s:.0f} s): {upstream.qps:,.0f} qps.",
            "",
        ]
    lines += ["## Details", "", details(results)]
    return "\n".join(lines)


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="schoolgate-bench-") as tmp:
        yield Path(tmp)


def other_load(group: ProcessGroup, seconds: float) -> float:
    """Cores' worth of CPU used by processes outside the benchmark over the next seconds."""
    before = all_cpu_ticks()
    time.sleep(seconds)
    return other_cpu_seconds(before, all_cpu_ticks(), group.pids()) / seconds


def settle(group: ProcessGroup, opts: Options) -> None:
    """Wait (up to --idle-wait s) for other load on the machine to stop before a run.

    On a shared or desktop machine a burst of someone else's work (a test run, a build) would
    otherwise land in the middle of a measurement; runs that still overlap one get a note.
    """
    deadline = time.monotonic() + opts.idle_wait
    load = other_load(group, 0.5)
    if load <= DISTURBED_CPU:
        return
    log(f"  other processes are using {load:.0%} of a core; waiting up to {opts.idle_wait:g} s")
    while time.monotonic() < deadline:
        load = other_load(group, 1.0)
        if load <= DISTURBED_CPU:
            return
    log(f"  still {load:.0%} of a core in use by others; measuring anyway")


def server_idle(pid: int, timeout: float = 30.0) -> None:
    """Wait (up to ``timeout`` s) until the server under test has finished what the previous
    run left it: a server that logs every query writes the backlog of an overload after the
    load stops, and a fixed-rate run must measure the steady state, not that catch-up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        if (cpu_seconds(pid) - before) / 0.5 <= DISTURBED_CPU:
            return
    log(f"  the server is still busy after {timeout:g} s; measuring anyway")


def measure_all(
    group: ProcessGroup, workdir: Path, opts: Options, perf: PerfSettings, logs: Path
) -> tuple[list[ServerResult], PerfResult]:
    data = gen_lists.ensure(opts.names, opts.seed, opts.data_dir, log)
    ctx = Context(workdir, opts.upstream_port)
    log(f"starting upstream (nsd) on port {opts.upstream_port}")
    start_nsd(
        group,
        "upstream",
        workdir / "upstream",
        opts.upstream_port,
        opts.client_core,
        data.probe_allowed,
        logs / "upstream.log",
    )
    # How fast the upstream alone is: it must be far above every server's miss rate.
    misses = data.path(opts.data_dir, "misses")
    upstream = run_dnsperf(group, perf, "upstream", opts.upstream_port, misses, 5, once=True)
    log(f"upstream alone: {upstream.qps:,.0f} qps")

    ports = {name: opts.base_port + index for index, name in enumerate(opts.servers)}
    results = [
        bench_server(group, ctx, opts, perf, data, SERVERS[name], ports[name], logs)
        for name in opts.servers
    ]
    if opts.floor:
        floor_port = opts.base_port + FLOOR_PORT_OFFSET
        results.append(measure_floor(group, ctx, opts, perf, data, floor_port, logs))
    if opts.reload:
        for result in results:
            if result.status == "ok":
                log(f"{result.name}: reload test {RELOAD_FROM:,} -> {RELOAD_TO:,}")
                reload_test(
                    group, ctx, opts, perf, SERVERS[result.name], ports[result.name], logs, result
                )
    return results, upstream


def run(opts: Options) -> int:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    logs = opts.out_dir / f"logs-{stamp}"
    perf = PerfSettings(opts.client_core, opts.outstanding, opts.clients)
    with termination_as_interrupt(), ProcessGroup() as group, workspace() as workdir:
        results, upstream = measure_all(group, workdir, opts, perf, logs)
    markdown = render(opts, results, upstream)
    json_path, md_path = write_outputs(opts, stamp, results, upstream, markdown)
    print()
    print(markdown)
    print()
    log(repo_relative(f"wrote {json_path} and {md_path.name}; server logs in {logs}"))
    failed = [r.name for r in results if r.status.startswith("failed")]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        return run(opts)
    except KeyboardInterrupt:
        log("interrupted; everything started by this run has been stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
