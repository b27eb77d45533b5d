"""Generate realistic synthetic block lists and dnsperf query mixes.

Everything is deterministic for a given seed: the blocked names are the first N unique names
of one pseudo-random stream, so the 1M list is a prefix of the 5M list (handy for the reload
test), and the allowed names come from a second, independent stream.

Outputs for N names and seed S (all under the output directory):

* ``blocklist-N-sS.domains``  one name per line
* ``blocklist-N-sS.hosts``    the same names as ``0.0.0.0 name`` (dnsmasq addn-hosts, Pi-hole style)
* ``blocklist-N-sS.unbound``  ``local-zone: "name." always_null`` lines; a local zone covers
  the name and every name below it, which is what a domain block list means
* ``hits-N-sS.txt``           dnsperf mix: Zipf-repeated names, ~90% allowed / ~10% blocked
* ``misses-N-sS.txt``         dnsperf mix: every query a unique, never-seen allowed name
* ``meta-N-sS.json``          counts, seed, generator version and probe names

Usage: python bench/gen_lists.py --names 1000000 [--seed 1] [--out bench/data]
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import time
from bisect import bisect
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import accumulate
from pathlib import Path

# Bump whenever the output for a given seed changes, so cached data is rebuilt.
GENERATOR_VERSION = 3

DEFAULT_SEED = 1
DEFAULT_OUT = Path(__file__).resolve().parent / "data"

# Upstream wildcard answer; the harness uses it to tell "forwarded" from "blocked".
UPSTREAM_A = "192.0.2.1"
UPSTREAM_AAAA = "2001:db8::1"

# Total label count (TLD labels included). Most listed names are registrable domains or one
# level below them; deep tracker/CDN names are rarer.
LABEL_COUNTS: tuple[tuple[int, float], ...] = ((2, 42), (3, 34), (4, 14), (5, 7), (6, 3))

# Rough shape of TLDs seen in public ad/tracker/adult lists: .com dominates, then a long tail
# of cheap gTLDs and ccTLDs, a few of them with second-level registries.
TLDS: tuple[tuple[str, float], ...] = (
    ("com", 46.0),
    ("net", 8.0),
    ("org", 4.0),
    ("ru", 4.0),
    ("info", 3.0),
    ("xyz", 3.0),
    ("top", 3.0),
    ("de", 2.5),
    ("cn", 2.0),
    ("co.uk", 1.8),
    ("online", 1.5),
    ("site", 1.5),
    ("io", 1.5),
    ("co", 1.4),
    ("com.br", 1.2),
    ("fr", 1.0),
    ("it", 1.0),
    ("nl", 1.0),
    ("pl", 1.0),
    ("jp", 0.8),
    ("in", 0.8),
    ("tk", 0.9),
    ("club", 0.9),
    ("biz", 0.8),
    ("me", 0.8),
    ("live", 0.7),
    ("tv", 0.7),
    ("us", 0.7),
    ("cc", 0.6),
    ("eu", 0.6),
    ("es", 0.6),
    ("pw", 0.5),
    ("ml", 0.4),
    ("ga", 0.4),
    ("cf", 0.4),
    ("gq", 0.4),
    ("com.au", 0.5),
    ("co.jp", 0.3),
    ("com.tr", 0.3),
    ("vn", 0.5),
    ("ir", 0.4),
    ("ua", 0.5),
    ("ro", 0.4),
    ("cz", 0.3),
    ("be", 0.3),
    ("ch", 0.3),
    ("se", 0.3),
    ("ca", 0.4),
    ("icu", 0.6),
    ("buzz", 0.3),
    ("fun", 0.3),
    ("space", 0.3),
    ("website", 0.2),
    ("app", 0.3),
)

# Words that really occur in listed names (ad tech, hosting, shops, gambling, adult sites).
WORDS: tuple[str, ...] = (
    "ads",
    "ad",
    "track",
    "click",
    "stat",
    "stats",
    "cdn",
    "static",
    "pixel",
    "metrics",
    "tag",
    "media",
    "online",
    "best",
    "free",
    "web",
    "tech",
    "cloud",
    "data",
    "shop",
    "news",
    "game",
    "games",
    "play",
    "video",
    "tube",
    "cams",
    "live",
    "chat",
    "dating",
    "hot",
    "xxx",
    "adult",
    "deals",
    "app",
    "mobile",
    "link",
    "host",
    "server",
    "mail",
    "info",
    "world",
    "global",
    "star",
    "top",
    "smart",
    "fast",
    "my",
    "get",
    "go",
    "one",
    "hub",
    "zone",
    "city",
    "home",
    "love",
    "life",
    "photo",
    "pic",
    "img",
    "music",
    "movie",
    "film",
    "sport",
    "market",
    "trade",
    "crypto",
    "coin",
    "finance",
    "loan",
    "cash",
    "win",
    "lucky",
    "slot",
    "poker",
    "bingo",
    "lotto",
    "promo",
    "offer",
    "sale",
    "buy",
    "store",
    "mart",
    "box",
    "lab",
    "pro",
    "plus",
    "max",
    "ultra",
    "mega",
    "super",
    "digital",
    "social",
    "share",
    "meet",
    "friend",
    "push",
    "notify",
    "adserver",
    "banner",
    "popup",
    "counter",
    "analytics",
    "telemetry",
    "beacon",
    "sync",
    "bid",
    "rtb",
    "affiliate",
    "partner",
    "network",
    "direct",
    "traffic",
    "view",
    "stream",
    "download",
    "torrent",
    "proxy",
    "vpn",
    "secure",
    "update",
    "verify",
    "account",
    "bonus",
    "casino",
    "bet",
    "spin",
    "jackpot",
    "gift",
    "prize",
    "survey",
    "quiz",
    "health",
    "pharma",
    "diet",
    "travel",
    "hotel",
    "auto",
    "car",
    "loans",
    "insure",
    "green",
    "blue",
    "red",
    "black",
    "gold",
    "sun",
    "moon",
    "sky",
    "net",
    "site",
    "page",
    "blog",
    "forum",
)

ONSETS = (
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "w",
    "z",
    "br",
    "cl",
    "cr",
    "dr",
    "fl",
    "gr",
    "pl",
    "pr",
    "sh",
    "st",
    "th",
    "tr",
    "ch",
    "",
)
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ea", "io", "ou", "y")
CODAS = ("", "", "", "", "n", "r", "s", "t", "x", "ck", "ng", "l", "m")

# Labels found below registrable domains, weighted by how often they show up in lists.
SUB_PREFIXES: tuple[tuple[str, float], ...] = (
    ("www", 25),
    ("m", 4),
    ("cdn", 5),
    ("static", 4),
    ("img", 3),
    ("ads", 5),
    ("ad", 3),
    ("api", 4),
    ("track", 3),
    ("tracking", 2),
    ("pixel", 2),
    ("stats", 3),
    ("analytics", 2),
    ("metrics", 2),
    ("tag", 2),
    ("t", 2),
    ("s", 2),
    ("a", 1),
    ("b", 1),
    ("c", 1),
    ("app", 2),
    ("mobile", 1),
    ("media", 2),
    ("assets", 2),
    ("content", 1),
    ("log", 1),
    ("events", 1),
    ("collect", 1),
    ("sync", 1),
    ("delivery", 1),
    ("srv", 1),
    ("edge", 1),
    ("eu", 1),
    ("us", 1),
    ("de", 1),
    ("fr", 1),
    ("uk", 1),
    ("www2", 1),
    ("mail", 1),
    ("news", 1),
    ("go", 1),
    ("click", 2),
    ("link", 1),
    ("secure", 1),
    ("login", 1),
    ("shop", 1),
)
REGIONS = ("eu-west-1", "us-east-1", "us-west-2", "ap-south-1", "eu-central-1", "sa-east-1")
ALNUM = string.ascii_lowercase + string.digits
HEX = "0123456789abcdef"

# Hit mix shape. The allowed pool is small enough to stay inside dnsmasq's 10,000-entry cache
# (A and AAAA are separate entries), so "hits" really measures cache hits on every server.
HIT_QUERIES = 200_000
HIT_ALLOWED_POOL = 3_000
HIT_BLOCKED_POOL = 1_000
HIT_BLOCKED_SHARE = 0.10
HIT_NEW_SHARE = 0.005
HIT_ZIPF_EXPONENT = 1.0
BLOCKED_SUBDOMAIN_SHARE = 0.4  # of blocked queries, the share asking for a name below a listed one
AAAA_SHARE = 0.3
# Enough unique names that even a fast server cannot exhaust them within a bounded dnsperf run
# at the single-dnsperf ceiling; the harness runs the file at most once (-n 1).
MISS_QUERIES = 1_500_000


class WeightedPicker:
    """Draw from a fixed weighted table with one random() and one bisect per draw."""

    def __init__(self, table: Sequence[tuple[str, float]], rnd: Callable[[], float]) -> None:
        self.values = [value for value, _ in table]
        self.cum = list(accumulate(weight for _, weight in table))
        self.total = self.cum[-1]
        self.rnd = rnd

    def __call__(self) -> str:
        return self.values[bisect(self.cum, self.rnd() * self.total)]


class NameGenerator:
    """An endless stream of realistic-looking DNS names (unique filtering is the caller's)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        rnd = self.rng.random
        self.rnd = rnd
        self.tld = WeightedPicker(TLDS, rnd)
        self.single_tld = WeightedPicker([t for t in TLDS if "." not in t[0]], rnd)
        counts = [(str(n), w) for n, w in LABEL_COUNTS]
        self.label_count = WeightedPicker(counts, rnd)
        self.sub_prefix = WeightedPicker(SUB_PREFIXES, rnd)
        # A fixed pseudo-word vocabulary makes words recur across names, like real brands do.
        self.vocab = [self._pseudo_word(1 + self.rng.randrange(3)) for _ in range(30_000)]

    def _pseudo_word(self, syllables: int) -> str:
        choice = self.rng.choice
        return "".join(choice(ONSETS) + choice(VOWELS) + choice(CODAS) for _ in range(syllables))

    def _word(self) -> str:
        # Real words are a minority of tokens but each one recurs a lot.
        if self.rnd() < 0.35:
            return self.rng.choice(WORDS)
        return self.rng.choice(self.vocab)

    def _random_chars(self, alphabet: str, low: int, high: int) -> str:
        return "".join(self.rng.choices(alphabet, k=self.rng.randint(low, high)))

    def registrable_label(self) -> str:
        r = self.rnd()
        if r < 0.30:
            return self._word()
        if r < 0.55:
            return self._word() + self._word()
        if r < 0.65:
            return f"{self._word()}-{self._word()}"
        if r < 0.75:
            return self._word() + str(self.rng.randrange(1, 10_000))
        if r < 0.85:
            return self._pseudo_word(2 + self.rng.randrange(3))
        if r < 0.95:
            # Algorithmically generated names, common in malware and tracker lists.
            return self._random_chars(ALNUM, 6, 14)
        return self._word() + self._word() + self._word()

    def sub_label(self) -> str:
        r = self.rnd()
        if r < 0.60:
            return self.sub_prefix()
        if r < 0.75:
            return self._word()
        if r < 0.85:
            return self.sub_prefix() + str(self.rng.randrange(1, 20))
        if r < 0.95:
            return self._random_chars(HEX, 8, 16)
        return self.rng.choice(REGIONS)

    def name(self) -> str:
        total = int(self.label_count())
        tld = self.tld()
        if tld.count(".") + 1 >= total:
            tld = self.single_tld()
        subs = total - 1 - (tld.count(".") + 1)
        labels = [self.registrable_label(), tld]
        for depth in range(subs):
            label = self.sub_label()
            # "www" only ever appears as the leftmost label in real names.
            while label.startswith("www") and depth < subs - 1:
                label = self.sub_label()
            labels.insert(0, label)
        return ".".join(labels)


def unique_names(gen: NameGenerator, exclude: Callable[[str], bool]) -> Iterator[str]:
    """Yield names from gen once each, skipping those exclude() rejects."""
    seen: set[str] = set()
    while True:
        name = gen.name()
        if name not in seen and not exclude(name):
            seen.add(name)
            yield name


def suffixes(name: str) -> Iterator[str]:
    """The name and every parent of it, longest first (a.b.com, b.com, com)."""
    yield name
    start = name.find(".")
    while start != -1:
        yield name[start + 1 :]
        start = name.find(".", start + 1)


def is_blocked(name: str, blocked: set[str]) -> bool:
    """True when the name or any parent is listed: the semantics of a domain block list."""
    return any(s in blocked for s in suffixes(name))


def zipf_cum_weights(n: int, exponent: float) -> list[float]:
    return list(accumulate(1.0 / (rank**exponent) for rank in range(1, n + 1)))


@dataclass(frozen=True)
class DataSet:
    """Paths and facts about one generated data set, as stored in the meta file."""

    names: int
    seed: int
    version: int
    domains: str
    hosts: str
    unbound: str
    hits: str
    misses: str
    hit_queries: int
    miss_queries: int
    probe_blocked: str
    probe_blocked_sub: str
    probe_allowed: str
    seconds: float

    def path(self, base: Path, field: str) -> Path:
        value = getattr(self, field)
        assert isinstance(value, str)
        return base / value


def stem(names: int, seed: int) -> str:
    return f"{names}-s{seed}"


def meta_path(out: Path, names: int, seed: int) -> Path:
    return out / f"meta-{stem(names, seed)}.json"


def write_lines(path: Path, lines: Iterable[str], chunk: int = 100_000) -> None:
    """Write through a temporary name so an interrupted run never leaves a truncated file."""
    tmp = path.with_name(path.name + ".part")
    with tmp.open("w", encoding="ascii") as fh:
        batch: list[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= chunk:
                fh.write("\n".join(batch) + "\n")
                batch.clear()
        if batch:
            fh.write("\n".join(batch) + "\n")
    tmp.replace(path)


def qtype(rng: random.Random) -> str:
    return "AAAA" if rng.random() < AAAA_SHARE else "A"


def blocked_query_pool(rng: random.Random, listed: list[str], sub: NameGenerator) -> list[str]:
    """Names the hit mix asks for that must be blocked: listed names and names below them."""
    picks = rng.sample(listed, HIT_BLOCKED_POOL)
    return [
        f"{sub.sub_label()}.{name}" if rng.random() < BLOCKED_SUBDOMAIN_SHARE else name
        for name in picks
    ]


def hit_mix(
    rng: random.Random, allowed: list[str], blocked: list[str], new: list[str]
) -> list[str]:
    """Zipf repeats over the allowed and blocked pools, plus names seen only once."""
    n_blocked = int(HIT_QUERIES * HIT_BLOCKED_SHARE)
    n_new = len(new)
    n_allowed = HIT_QUERIES - n_blocked - n_new
    queries = rng.choices(
        allowed, cum_weights=zipf_cum_weights(len(allowed), HIT_ZIPF_EXPONENT), k=n_allowed
    )
    queries += rng.choices(
        blocked, cum_weights=zipf_cum_weights(len(blocked), HIT_ZIPF_EXPONENT), k=n_blocked
    )
    queries += new
    rng.shuffle(queries)
    return [f"{name} {qtype(rng)}" for name in queries]


def generate(names: int, seed: int, out: Path, log: Callable[[str], None] = print) -> DataSet:
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    key = stem(names, seed)

    log(f"generating {names:,} blocked names (seed {seed})")
    listed_stream = unique_names(NameGenerator(seed), lambda _name: False)
    listed = [next(listed_stream) for _ in range(names)]
    blocked_set = set(listed)

    domains = f"blocklist-{key}.domains"
    hosts = f"blocklist-{key}.hosts"
    unbound = f"blocklist-{key}.unbound"
    write_lines(out / domains, listed)
    write_lines(out / hosts, (f"0.0.0.0 {name}" for name in listed))
    write_lines(out / unbound, (f'local-zone: "{name}." always_null' for name in listed))

    log("generating allowed names and query mixes")
    # One stream for every allowed name, so hit-mix names and miss-mix names never overlap.
    allowed_stream = unique_names(
        NameGenerator(seed + 1_000_003), lambda name: is_blocked(name, blocked_set)
    )
    rng = random.Random(seed + 2_000_003)
    allowed_pool = [next(allowed_stream) for _ in range(HIT_ALLOWED_POOL)]
    new_names = [next(allowed_stream) for _ in range(int(HIT_QUERIES * HIT_NEW_SHARE))]
    blocked_pool = blocked_query_pool(rng, listed, NameGenerator(seed + 3_000_003))
    hits = f"hits-{key}.txt"
    write_lines(out / hits, hit_mix(rng, allowed_pool, blocked_pool, new_names))

    misses = f"misses-{key}.txt"
    write_lines(out / misses, (f"{next(allowed_stream)} {qtype(rng)}" for _ in range(MISS_QUERIES)))

    probe_sub = next((n for n in blocked_pool if n not in blocked_set), "probe." + listed[0])
    data = DataSet(
        names=names,
        seed=seed,
        version=GENERATOR_VERSION,
        domains=domains,
        hosts=hosts,
        unbound=unbound,
        hits=hits,
        misses=misses,
        hit_queries=HIT_QUERIES,
        miss_queries=MISS_QUERIES,
        probe_blocked=listed[0],
        probe_blocked_sub=probe_sub,
        probe_allowed=allowed_pool[0],
        seconds=round(time.monotonic() - started, 1),
    )
    # The meta file is written last: its presence means the data set is complete.
    meta_path(out, names, seed).write_text(json.dumps(asdict(data), indent=2) + "\n")
    log(f"data set {key} written in {data.seconds} s")
    return data


def load(names: int, seed: int, out: Path) -> DataSet | None:
    """The cached data set, or None when it is missing, stale or incomplete."""
    path = meta_path(out, names, seed)
    if not path.exists():
        return None
    data = DataSet(**json.loads(path.read_text()))
    if data.version != GENERATOR_VERSION:
        return None
    files = ("domains", "hosts", "unbound", "hits", "misses")
    if not all(data.path(out, field).exists() for field in files):
        return None
    return data


def ensure(names: int, seed: int, out: Path, log: Callable[[str], None] = print) -> DataSet:
    return load(names, seed, out) or generate(names, seed, out, log)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--names",
        type=int,
        action="append",
        help="list size; repeat for several (default: 1000000 and 5000000)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--force", action="store_true", help="regenerate even when cached")
    args = parser.parse_args(argv)
    for names in args.names or [1_000_000, 5_000_000]:
        if args.force:
            generate(names, args.seed, args.out)
        else:
            ensure(names, args.seed, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
