"""A full list update at scale: download, unpack, parse, compile and swap, through the real worker.

    .venv/bin/python bench/update.py --names 5000000

The synthetic list of ``gen_lists.py`` (made in ``bench/data`` if missing) is served from a
small HTTP server on 127.0.0.1 in three shapes: plain text, ``.gz``, and a UT1-style
``.tar.gz`` holding ``bench/domains``. For each shape, in a fresh state directory:

- **cold**: one ``ListStore.update`` (the agent's own call, which runs the list worker
  process) with nothing on disk: download, unpack, parse, compile, promote;
- **304**: the same update again; the server answers ``304 Not Modified`` to the ETag.

Each update runs in its own subprocess of this script, so the worker's peak RSS
(``RUSAGE_CHILDREN``, a maximum over all children) belongs to that one update. Then, outside
the worker and for a breakdown only: the download alone and the unpack alone (per shape), the
parse alone (once), and the worker's start-up (interpreter and imports). Last, the agent side
of the swap: the RSS of a fresh process before and after it opens the new compiled file and
makes 100,000 lookups.

A table is printed and everything is written to ``bench/out/update-N.json``. Traffic stays on
loopback; every child gets a time limit and is stopped (with anything it started) when it
overruns. Nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import io
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from pathlib import Path
from typing import Any

import gen_lists

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
OUT = HERE / "out"
SOURCE_NAME = "bench"
CATEGORY = "adult"
UT1_MEMBER = "bench/domains"
GZIP_LEVEL = 6  # what gzip(1) and most servers' pre-compressed files use
MIB = 1024 * 1024
# The agent's defaults for [updates] (updates.max_download_mb = 200, max_list_mb = 1000).
DEFAULT_MAX_DOWNLOAD_MB = 200
DEFAULT_MAX_LIST_MB = 1000
MAX_SHRINK = 0.5
_BUILT_IN = re.compile(r"compiled (\d+) unique names .* in ([0-9.]+) s$")


# --- data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One way of publishing the list, as a source would."""

    key: str
    format: str  # ListFormat value
    member: str
    file: Path  # what the server sends


def _fresh(path: Path, origin: Path) -> bool:
    return path.exists() and path.stat().st_mtime_ns >= origin.stat().st_mtime_ns


def _atomic(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def make_shapes(domains: Path) -> list[Shape]:
    """The three published forms of ``domains``, made next to it unless already there."""
    gz = domains.with_name(domains.name + ".gz")
    if not _fresh(gz, domains):
        print(f"writing {gz.name}", flush=True)
        with open(domains, "rb") as src, gzip.open(_atomic(gz), "wb", GZIP_LEVEL) as dst:
            shutil.copyfileobj(src, dst, MIB)
        _atomic(gz).replace(gz)
    ut1 = domains.with_name(domains.stem + ".ut1.tar.gz")
    if not _fresh(ut1, domains):
        print(f"writing {ut1.name}", flush=True)
        with tarfile.open(_atomic(ut1), "w:gz", compresslevel=GZIP_LEVEL) as archive:
            archive.add(domains, arcname=UT1_MEMBER)
            usage = b"black\nbench: synthetic names\n"
            info = tarfile.TarInfo("bench/usage")
            info.size = len(usage)
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(usage))
        _atomic(ut1).replace(ut1)
    return [
        Shape("plain", "domains", "", domains),
        Shape("gz", "domains", "", gz),
        Shape("ut1", "ut1", UT1_MEMBER, ut1),
    ]


# --- the server -----------------------------------------------------------------------------


class FileServer:
    """Serves files from disk on loopback with an ETag, answering 304 when it matches."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files
        self.answers: dict[str, list[int]] = {p: [] for p in files}
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = server.files.get(self.path)
                if path is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                st = path.stat()
                etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'  # as nginx makes them
                status = 304 if self.headers.get("If-None-Match") == etag else 200
                with lock:
                    server.answers[self.path].append(status)
                self.send_response(status)
                self.send_header("ETag", etag)
                if status == 304:
                    self.end_headers()
                    return
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(st.st_size))
                self.end_headers()
                try:
                    with open(path, "rb") as f:
                        self.connection.sendfile(f)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


# --- children: each measurement in its own process --------------------------------------------


def child_env() -> dict[str, str]:
    """This environment without proxies, so every request stays on loopback."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def run_child(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``job`` in a fresh process of this script; stop its whole group if it overruns."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        start_new_session=True,  # its own group: the worker it starts goes with it
    )
    try:
        out, err = proc.communicate(json.dumps(job).encode(), timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{job['mode']} child exited with {proc.returncode}: {tail}")
    result: dict[str, Any] = json.loads(out)
    return result


def child_main() -> int:
    job = json.load(sys.stdin)
    handlers = {
        "update": child_update,
        "fetch": child_fetch,
        "parse": child_parse,
        "agent": child_agent,
    }
    json.dump(handlers[job["mode"]](job), sys.stdout)
    return 0


def child_update(job: dict[str, Any]) -> dict[str, Any]:
    """One ``ListStore.update``, as ``schoolgate.agent.lists.update`` makes it."""
    from schoolgate.agent.filter.parsers import ListFormat
    from schoolgate.agent.filter.sources import ListSource
    from schoolgate.agent.filter.store import ListStore, RemoteSource

    state_dir = Path(job["state_dir"])
    store = ListStore(state_dir)
    # list_sources(config, with_missing=True): the download at its last-good path.
    sources = [
        ListSource(
            SOURCE_NAME,
            CATEGORY,
            store.downloads.last_good(SOURCE_NAME),
            ListFormat(job["format"]),
        )
    ]
    remote = [RemoteSource(SOURCE_NAME, job["url"], job["url"], job["member"])]
    started = time.perf_counter()
    result = asyncio.run(ListStore(state_dir).update(sources, remote, job["limits"], MAX_SHRINK))
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    names = result.lists.count
    result.lists.close()
    build_s = names_reported = None
    for line in result.report:
        if m := _BUILT_IN.search(line):
            names_reported, build_s = int(m[1]), float(m[2])
    return {
        "wall_s": wall,
        "worker_peak_rss_mb": usage.ru_maxrss / 1024,
        "worker_cpu_s": usage.ru_utime + usage.ru_stime,
        "build_s": build_s,
        "names": names,
        "names_reported": names_reported,
        "compiled_bytes": store.current.stat().st_size,
        "list_bytes": store.downloads.last_good(SOURCE_NAME).stat().st_size,
        "status": result.sources.get(SOURCE_NAME, {}).get("status"),
        "report": result.report,
    }


def child_fetch(job: dict[str, Any]) -> dict[str, Any]:
    """The worker's download and unpack steps alone, timed apart."""
    from schoolgate.agent.filter.fetch import FetchLimits, client, fetch
    from schoolgate.agent.filter.unpack import unpack

    lim = job["limits"]
    limits = FetchLimits(
        lim["timeout"], lim["max_download_bytes"], lim["max_redirects"], lim["max_list_bytes"]
    )
    work = Path(job["dir"])
    work.mkdir(parents=True, exist_ok=True)
    raw, out = work / "download", work / "list"
    started = time.perf_counter()
    with client(limits) as http:
        got = fetch(http, job["url"], raw, limits)
    fetched = time.perf_counter()
    unpack(raw, out, job["member"], limits.max_list_bytes)
    unpacked = time.perf_counter()
    size = out.stat().st_size
    raw.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    return {
        "download_s": fetched - started,
        "unpack_s": unpacked - fetched,
        "download_bytes": got.size,
        "list_bytes": size,
    }


def child_parse(job: dict[str, Any]) -> dict[str, Any]:
    """Parsing and fingerprinting one list (``read_source``, the first half of a build)."""
    from schoolgate.agent.filter.build import read_source
    from schoolgate.agent.filter.parsers import ListFormat
    from schoolgate.agent.filter.sources import ListSource

    source = ListSource(SOURCE_NAME, CATEGORY, Path(job["path"]), ListFormat.DOMAINS)
    started = time.perf_counter()
    _prints, result = read_source(source)
    return {
        "parse_s": time.perf_counter() - started,
        "entries": result.report.entries,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _memory() -> dict[str, float]:
    """This process's resident memory, MB: total, anonymous (private heap) and file-backed."""
    out: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    with open("/proc/self/smaps_rollup", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Private_Dirty", "Pss"):
                out[key] = int(value.split()[0]) / 1024
    return out


def child_agent(job: dict[str, Any]) -> dict[str, Any]:
    """What the agent pays to put a new build in service: open the mapped file, look names up."""
    from schoolgate.agent.dns.wire import name_labels, text_to_wire
    from schoolgate.agent.filter.compiled import CompiledLists

    lookups = int(job["lookups"])
    listed = Path(job["domains"])
    total = int(job["names"])
    step = max(1, total // (lookups // 2))
    with open(listed, encoding="ascii") as f:
        hit_names = [line.strip() for line in islice(f, 0, None, step)][: lookups // 2]
    # Half of the hits are below a listed name, as most blocked queries are.
    hit_names = [f"www.{n}" if i % 2 else n for i, n in enumerate(hit_names)]
    with open(job["misses"], encoding="ascii") as f:
        miss_names = [line.split()[0] for line in islice(f, lookups - len(hit_names))]
    queries = []
    for name in hit_names + miss_names:
        wire = text_to_wire(name)
        queries.append((wire, name_labels(wire)))
    del hit_names, miss_names
    gc.collect()

    before = _memory()
    started = time.perf_counter()
    lists = CompiledLists(Path(job["compiled"]))
    open_ms = (time.perf_counter() - started) * 1e3
    opened = _memory()
    started = time.perf_counter()
    blocked = sum(1 for qname, labels in queries if lists.lookup(qname, labels))
    lookup_s = time.perf_counter() - started
    after = _memory()
    lists.close()
    return {
        "open_ms": open_ms,
        "lookups": len(queries),
        "blocked": blocked,
        "lookup_us": lookup_s / len(queries) * 1e6,
        "before": before,
        "opened": opened,
        "after": after,
    }


# --- the run --------------------------------------------------------------------------------


def limits_for(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "timeout": 60,
        "max_download_bytes": args.max_download_mb * MIB,
        "max_redirects": 5,
        "max_list_bytes": args.max_list_mb * MIB,
    }


@contextmanager
def work_dir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="schoolgate-bench-update-") as tmp:
        yield Path(tmp)


def worker_start_s(timeout: float) -> float:
    """The worker's fixed cost: a Python start-up and its imports (best of three)."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import schoolgate.agent.filter.worker"],
            check=True,
            timeout=timeout,
        )
        times.append(time.perf_counter() - started)
    return min(times)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    data = gen_lists.ensure(args.names, args.seed, DATA)
    domains = data.path(DATA, "domains")
    shapes = make_shapes(domains)
    limits = limits_for(args)
    routes = {f"/{s.key}/{s.file.name}": s for s in shapes}
    results: dict[str, Any] = {
        "names": args.names,
        "seed": args.seed,
        "cpus": os.cpu_count(),
        "limits": limits,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "shapes": {s.key: {"format": s.format, "member": s.member} for s in shapes},
        "runs": [],
    }
    with work_dir(args.work) as work, FileServer({p: s.file for p, s in routes.items()}) as srv:
        for run in range(args.runs):
            rows: dict[str, Any] = {}
            for path, shape in routes.items():
                state = work / f"run{run}-{shape.key}"
                shutil.rmtree(state, ignore_errors=True)
                job = {
                    "mode": "update",
                    "state_dir": str(state),
                    "url": srv.url(path),
                    "member": shape.member,
                    "format": shape.format,
                    "limits": limits,
                }
                print(f"run {run + 1}: {shape.key}: cold update", flush=True)
                cold = run_child(job, args.child_timeout)
                print(f"run {run + 1}: {shape.key}: 304 update", flush=True)
                again = run_child(job, args.child_timeout)
                if cold["status"] != "updated" or again["status"] != "unchanged":
                    raise RuntimeError(f"{shape.key}: got {cold['status']}, {again['status']}")
                rows[shape.key] = {
                    "cold": cold,
                    "not_modified": again,
                    "download_bytes": shape.file.stat().st_size,
                    "http": list(srv.answers[path]),
                }
                srv.answers[path].clear()
                if run != args.runs - 1 or shape.key != "plain":
                    shutil.rmtree(state, ignore_errors=True)
            results["runs"].append(rows)

        print("breakdown: download and unpack alone, parse alone, worker start-up", flush=True)
        breakdown: dict[str, Any] = {}
        for path, shape in routes.items():
            breakdown[shape.key] = run_child(
                {
                    "mode": "fetch",
                    "url": srv.url(path),
                    "member": shape.member,
                    "limits": limits,
                    "dir": str(work / f"fetch-{shape.key}"),
                },
                args.child_timeout,
            )
        breakdown["parse"] = run_child({"mode": "parse", "path": str(domains)}, args.child_timeout)
        breakdown["worker_start_s"] = worker_start_s(args.child_timeout)
        results["breakdown"] = breakdown

        print(f"agent side: open the new build, {args.lookups:,} lookups", flush=True)
        compiled = work / f"run{args.runs - 1}-plain" / "lists" / "current.sgl"
        results["agent"] = run_child(
            {
                "mode": "agent",
                "compiled": str(compiled),
                "domains": str(domains),
                "misses": str(data.path(DATA, "misses")),
                "names": args.names,
                "lookups": args.lookups,
            },
            args.child_timeout,
        )
    return results


def _s(seconds: float | None) -> str:
    """Seconds, or "-" when the step did not run (an update that found nothing new)."""
    return "-" if seconds is None else f"{seconds:.1f}"


def table(results: dict[str, Any]) -> list[str]:
    mb = 1 / MIB
    lines = [
        "| run | shape | cold s | 304 s | worker peak RSS MB (cold / 304) | worker CPU s (cold)"
        " | build s (cold / 304) | download MB | list MB | compiled MB | names |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, rows in enumerate(results["runs"], 1):
        for key, r in rows.items():
            c, n = r["cold"], r["not_modified"]
            lines.append(
                f"| {i} | {key} | {c['wall_s']:.1f} | {n['wall_s']:.1f}"
                f" | {c['worker_peak_rss_mb']:.0f} / {n['worker_peak_rss_mb']:.0f}"
                f" | {c['worker_cpu_s']:.1f} | {_s(c['build_s'])} / {_s(n['build_s'])}"
                f" | {r['download_bytes'] * mb:.1f} | {c['list_bytes'] * mb:.1f}"
                f" | {c['compiled_bytes'] * mb:.1f} | {c['names']:,} |"
            )
    b = results["breakdown"]
    lines += [
        "",
        f"breakdown (each step alone): worker start-up {b['worker_start_s']:.2f} s,"
        f" parse+fingerprint {b['parse']['parse_s']:.1f} s"
        f" (peak RSS {b['parse']['peak_rss_mb']:.0f} MB);"
        + "".join(
            f" {k}: download {b[k]['download_s']:.2f} s, unpack {b[k]['unpack_s']:.2f} s;"
            for k in results["shapes"]
        ),
    ]
    cold_builds = [r["plain"]["cold"]["build_s"] for r in results["runs"]]
    compile_s = statistics.median(cold_builds) - b["parse"]["parse_s"]
    lines.append(
        f"rest of the build (merge, filter, write; median cold build - parse): {compile_s:.1f} s"
    )
    a = results["agent"]
    before, opened, after = a["before"], a["opened"], a["after"]
    lines += [
        "",
        "| agent swap | VmRSS MB | RssAnon MB | RssFile MB | Private_Dirty MB |",
        "|---|---|---|---|---|",
    ]
    for label, m in (("before open", before), ("after open", opened), ("after lookups", after)):
        lines.append(
            f"| {label} | {m['VmRSS']:.1f} | {m['RssAnon']:.1f} | {m['RssFile']:.1f}"
            f" | {m['Private_Dirty']:.1f} |"
        )
    lines.append(
        f"open {a['open_ms']:.1f} ms (checksum and set-table scan); {a['lookups']:,} lookups,"
        f" {a['blocked']:,} blocked, {a['lookup_us']:.2f} us each;"
        f" anonymous RSS delta {after['RssAnon'] - before['RssAnon']:+.1f} MB"
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--names", type=int, default=5_000_000, help="list size (5000000)")
    parser.add_argument("--seed", type=int, default=gen_lists.DEFAULT_SEED)
    parser.add_argument("--runs", type=int, default=1, help="cold+304 rounds per shape (1)")
    parser.add_argument("--lookups", type=int, default=100_000, help="agent-side lookups")
    parser.add_argument(
        "--max-download-mb", type=int, default=DEFAULT_MAX_DOWNLOAD_MB, help="updates limit"
    )
    parser.add_argument("--max-list-mb", type=int, default=DEFAULT_MAX_LIST_MB, help="ditto")
    parser.add_argument(
        "--child-timeout", type=float, default=900.0, help="seconds allowed per measured step"
    )
    parser.add_argument("--work", type=Path, help="state directories here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = measure(args)
    results["seconds"] = round(time.monotonic() - started, 1)
    lines = table(results)
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"update-{args.names}.json"
    out.write_text(json.dumps({**results, "table": lines}, indent=2) + "\n")
    print(f"written to {out} ({results['seconds']} s in all)")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        sys.exit(child_main())
    sys.exit(main())
