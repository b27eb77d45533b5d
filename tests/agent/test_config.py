"""The agent configuration: defaults, every kind of error, paths and the bundled default."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from schoolgate.agent.config import (
    AgentConfig,
    CacheSection,
    ConfigError,
    FilterSection,
    ListConfig,
    load,
    parse,
    parse_address,
    redact_url,
    user_state_dir,
)
from schoolgate.agent.config_lines import key_path
from schoolgate.agent.dns.wire import text_to_wire
from schoolgate.agent.filter.build import read_source
from schoolgate.agent.filter.parsers import ListFormat
from schoolgate.agent.filter.sources import ListSource
from schoolgate.agent.policy.categories import AgeTier
from schoolgate.agent.policy.decision import Action
from schoolgate.agent.policy.safesearch import YouTubeMode

FILE = "test.toml"


def parse_text(text: str, base: Path, **kwargs: Any) -> AgentConfig:
    return parse(text, FILE, base=base, **kwargs)


def site_lists(c: AgentConfig) -> list[ListConfig]:
    """The lists the config file names, without the project's own."""
    return [x for x in c.lists if not x.name.startswith("schoolgate-")]


def config_error(text: str, base: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_text(text, base)
    return info.value


# --- defaults ------------------------------------------------------------------------------------


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    c = parse_text("", tmp_path)
    assert c.source == FILE
    assert c.listen == (("127.0.0.1", 53), ("::1", 53))
    assert c.state_dir == Path("/var/lib/schoolgate")
    assert c.tcp_idle_timeout == 10.0
    assert c.tcp_max_connections == 256
    assert c.tcp_max_queries_in_flight == 64
    assert c.udp_receive_buffer == 4 * 1024 * 1024
    assert ipaddress.ip_network("10.0.0.0/8") in c.client_networks
    assert ipaddress.ip_network("fc00::/7") in c.client_networks
    assert len(c.client_networks) == 9
    assert [u.label for u in c.upstreams] == ["udp://9.9.9.9:53", "udp://149.112.112.112:53"]
    assert c.upstream_timeout == 2.0
    assert c.upstream_ca_file is None
    assert c.cache == CacheSection()
    assert c.cache.size == 20_000
    assert (c.cache.min_ttl, c.cache.max_ttl, c.cache.max_negative_ttl) == (0, 86_400, 3_600)
    assert c.cache.serve_stale is True
    assert c.filter == FilterSection()
    assert c.filter.block_response == "null"
    assert c.filter.block_ttl == 60
    # The project's own lists, and the catalogue's default downloads.
    assert {x.name for x in c.lists} == {
        "schoolgate-encrypted-dns",
        "schoolgate-vpn-proxy",
        "schoolgate-genai",
        "schoolgate-social",
        "schoolgate-chat",
        "schoolgate-games",
        "schoolgate-streaming",
    }
    assert c.remote_lists and all(r.catalogue for r in c.remote_lists)
    assert c.age_tier is AgeTier.SECONDARY
    assert c.updates.enabled and c.updates.interval == 86_400


def test_a_full_config(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not checked here\n", encoding="utf-8")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "adult.txt").write_text("adult.example\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere" / "ads.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_text("ads.example\n", encoding="utf-8")
    c = parse_text(
        """
[server]
listen = ["0.0.0.0:53", "[::]:5353", "[fe80::1]:53"]
state_dir = "state"
tcp_idle_timeout = 2.5
tcp_max_connections = 10
udp_receive_buffer = 65536

[clients]
networks = ["10.1.0.0/16", "192.168.1.7", "2001:db8::/32", "10.2.3.4/8"]

[upstream]
servers = ["9.9.9.9", "tcp://[2620:fe::fe]", "tls://9.9.9.9#dns.quad9.net", "udp://1.1.1.1:5353"]
timeout = 1
tls_ca_file = "ca.pem"

[cache]
size = 100
min_ttl = 5
max_ttl = 3600
max_negative_ttl = 60
serve_stale = false
stale_max_age = 0
stale_answer_after = 0.5

[filter]
block_response = "blockpage"
block_ttl = 0
blockpage_ipv4 = ["192.0.2.80"]
blockpage_ipv6 = ["2001:db8::80"]
extended_error = "filtered"
cname_inspection = false

[policy]
age_tier = "ks2"
actions = { games = "alert", adult_content-2 = "allow" }

[[categories]]
id = "adult_content-2"
tier = "age-appropriate"
name = { en = "Adult content two", vi = "Nội dung hai" }
description = "A site's own category."
default = { staff = "allow" }

[[lists]]
name = "adult"
category = "adult_content-2"
path = "lists/adult.txt"
format = "hosts"

[[lists]]
name = "ads"
category = "malware"
path = "ELSEWHERE"

[[lists]]
name = "feed"
category = "child-abuse"
url = "https://user:secret@feed.example/list.txt"
format = "urls"

[sources]
defaults = false
enable = ["ut1-adult", "schoolgate-genai"]
disable = ["ut1-adult"]

[updates]
interval = 3600
jitter = 0
timeout = 5
max_download_mb = 10
max_list_mb = 20
max_redirects = 2
max_shrink = 0.25
""".replace("ELSEWHERE", str(elsewhere)),
        tmp_path,
    )
    assert c.listen == (("0.0.0.0", 53), ("::", 5353), ("fe80::1", 53))
    assert c.state_dir == tmp_path / "state"
    assert c.tcp_idle_timeout == 2.5
    assert c.client_networks == (
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("10.0.0.0/8"),  # host bits are dropped, not refused
    )
    assert [(u.scheme, u.host, u.port, u.tls_name) for u in c.upstreams] == [
        ("udp", "9.9.9.9", 53, None),
        ("tcp", "2620:fe::fe", 53, None),
        ("tls", "9.9.9.9", 853, "dns.quad9.net"),
        ("udp", "1.1.1.1", 5353, None),
    ]
    assert c.upstream_timeout == 1.0  # an integer is fine where a float is expected
    assert c.upstream_ca_file == tmp_path / "ca.pem"
    assert (c.cache.size, c.cache.min_ttl, c.cache.serve_stale) == (100, 5, False)
    assert c.filter.block_response == "blockpage"
    assert c.filter.blockpage_ipv4 == ["192.0.2.80"]
    assert c.filter.extended_error == "filtered"
    assert c.filter.cname_inspection is False
    assert [(x.name, x.category, x.format) for x in c.lists] == [
        ("schoolgate-genai", "genai", ListFormat.DOMAINS),
        ("adult", "adult_content-2", ListFormat.HOSTS),
        ("ads", "malware", ListFormat.AUTO),
    ]
    assert c.lists[1].path == tmp_path / "lists" / "adult.txt"
    assert c.lists[2].path == elsewhere
    [feed] = c.remote_lists
    assert (feed.name, feed.category, feed.format, feed.catalogue) == (
        "feed",
        "child-abuse",
        ListFormat.URLS,
        False,
    )
    assert c.confidential("child-abuse") and not c.confidential("malware")
    site = c.taxonomy["adult_content-2"]
    assert (
        site.site and site.name("vi") == "Nội dung hai" and site.name("zh") == "Adult content two"
    )
    assert site.defaults[AgeTier.STAFF] is Action.ALLOW
    assert site.defaults[AgeTier.KS2] is Action.BLOCK  # unsaid: blocked
    assert c.age_tier is AgeTier.KS2
    assert c.actions["games"] is Action.ALERT
    assert c.actions["adult_content-2"] is Action.ALLOW
    assert c.actions["gambling"] is Action.BLOCK
    assert c.actions["child-abuse"] is Action.BLOCK
    u = c.updates
    assert (u.interval, u.jitter, u.timeout, u.max_redirects, u.max_shrink) == (3600, 0, 5, 2, 0.25)
    assert (u.max_download_bytes, u.max_list_bytes) == (10 << 20, 20 << 20)


def test_relative_paths_are_resolved_against_base(tmp_path: Path) -> None:
    base = tmp_path / "etc" / "schoolgate"
    (base / "sub" / "dir").mkdir(parents=True)
    (base / "a.txt").write_text("a.example\n", encoding="utf-8")
    (base / "sub" / "dir" / "b.txt").write_text("b.example\n", encoding="utf-8")
    c = parse_text(
        '[server]\nstate_dir = "../state"\n'
        '[[lists]]\nname = "a"\ncategory = "adult"\npath = "a.txt"\n'
        '[[lists]]\nname = "b"\ncategory = "adult"\npath = "sub/dir/b.txt"\n',
        base,
    )
    assert c.state_dir == base / ".." / "state"
    assert [x.path for x in site_lists(c)] == [base / "a.txt", base / "sub" / "dir" / "b.txt"]


def test_home_in_paths_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "lists").mkdir(parents=True)
    (tmp_path / "home" / "lists" / "a.txt").write_text("a.example\n", encoding="utf-8")
    c = parse_text('[[lists]]\nname = "a"\ncategory = "adult"\npath = "~/lists/a.txt"\n', tmp_path)
    assert site_lists(c)[0].path == tmp_path / "home" / "lists" / "a.txt"


def test_blockpage_with_only_ipv6_is_enough(tmp_path: Path) -> None:
    c = parse_text(
        '[filter]\nblock_response = "blockpage"\nblockpage_ipv6 = ["2001:db8::1"]', tmp_path
    )
    assert c.filter.blockpage_ipv6 == ["2001:db8::1"]


# --- errors --------------------------------------------------------------------------------------

_LIST = '[[lists]]\nname = "{name}"\ncategory = "{category}"\npath = "x.txt"\n'


@pytest.mark.parametrize(
    ("text", "key", "value", "reason"),
    [
        pytest.param("[cache]\nsizee = 10", "cache.sizee", 10, "unknown key", id="unknown-nested"),
        pytest.param(
            '[server]\nlisten = ["127.0.0.1:53"]\nbogus = "x"',
            "server.bogus",
            "x",
            "unknown key",
            id="unknown-nested-2",
        ),
        pytest.param(
            '[[lists]]\nname = "a"\ncategory = "adult"\npath = "p"\ncolour = "red"',
            "lists[0].colour",
            "red",
            "unknown key",
            id="unknown-in-list",
        ),
        pytest.param(
            '[cache]\nsize = "big"', "cache.size", "big", "expected int, got str", id="str-for-int"
        ),
        pytest.param(
            "[cache]\nsize = true", "cache.size", True, "expected int, got bool", id="bool-for-int"
        ),
        pytest.param(
            "[cache]\nmin_ttl = 1.5", "cache.min_ttl", 1.5, "expected int, got float", id="float"
        ),
        pytest.param(
            '[server]\nlisten = "127.0.0.1:53"',
            "server.listen",
            "127.0.0.1:53",
            "expected array, got str",
            id="str-for-list",
        ),
        pytest.param("server = 3", "server", 3, "expected object, got int", id="int-for-table"),
        pytest.param(
            '[server]\nlisten = ["localhost:53"]',
            "server.listen[0]",
            "localhost:53",
            "'localhost' is not an IP address",
            id="listen-hostname",
        ),
        pytest.param(
            '[server]\nlisten = ["127.0.0.1:53", "127.0.0.1"]',
            "server.listen[1]",
            "127.0.0.1",
            "expected ADDRESS:PORT",
            id="listen-no-port",
        ),
        pytest.param(
            '[server]\nlisten = ["127.0.0.1:65536"]',
            "server.listen[0]",
            "127.0.0.1:65536",
            "'65536' is not a port number",
            id="listen-bad-port",
        ),
        pytest.param(
            '[server]\nlisten = ["::1:53"]',
            "server.listen[0]",
            "::1:53",
            "put IPv6 addresses in brackets",
            id="ipv6-without-brackets",
        ),
        pytest.param(
            "[server]\nlisten = []", "server.listen", [], "at least one address", id="no-listen"
        ),
        pytest.param(
            "[server]\ntcp_idle_timeout = 0",
            "server.tcp_idle_timeout",
            0.0,
            "must be a positive number",
            id="zero-timeout",
        ),
        pytest.param(
            "[server]\ntcp_idle_timeout = inf",
            "server.tcp_idle_timeout",
            float("inf"),
            "must be a positive number",
            id="inf-timeout",
        ),
        pytest.param(
            "[server]\ntcp_max_connections = -1",
            "server.tcp_max_connections",
            -1,
            "must be a positive number",
            id="negative-connections",
        ),
        pytest.param(
            '[upstream]\nservers = ["udp://dns.quad9.net"]',
            "upstream.servers[0]",
            "udp://dns.quad9.net",
            "'dns.quad9.net' is not an IP address",
            id="upstream-hostname",
        ),
        pytest.param(
            '[upstream]\nservers = ["9.9.9.9", "https://9.9.9.9/dns-query"]',
            "upstream.servers[1]",
            "https://9.9.9.9/dns-query",
            "unknown scheme 'https'",
            id="upstream-scheme",
        ),
        pytest.param(
            '[upstream]\nservers = ["udp://9.9.9.9/x"]',
            "upstream.servers[0]",
            "udp://9.9.9.9/x",
            "no path or query",
            id="upstream-path",
        ),
        pytest.param(
            '[upstream]\nservers = ["udp://9.9.9.9#dns.quad9.net"]',
            "upstream.servers[0]",
            "udp://9.9.9.9#dns.quad9.net",
            "only makes sense for tls://",
            id="upstream-tls-name-on-udp",
        ),
        pytest.param(
            "[upstream]\nservers = []",
            "upstream.servers",
            [],
            "at least one upstream",
            id="no-upstreams",
        ),
        pytest.param(
            "[upstream]\ntimeout = -2",
            "upstream.timeout",
            -2.0,
            "must be a positive number",
            id="upstream-timeout",
        ),
        pytest.param(
            '[upstream]\ntls_ca_file = "missing.pem"',
            "upstream.tls_ca_file",
            "missing.pem",
            "no such file",
            id="ca-file-missing",
        ),
        pytest.param(
            '[clients]\nnetworks = ["10.0.0.0/8", "10.0.0.0/33"]',
            "clients.networks[1]",
            "10.0.0.0/33",
            "not a network",
            id="bad-network",
        ),
        pytest.param(
            '[clients]\nnetworks = ["school"]',
            "clients.networks[0]",
            "school",
            "not a network",
            id="network-word",
        ),
        pytest.param(
            "[cache]\nmin_ttl = -1", "cache.min_ttl", -1, "must not be negative", id="neg-min-ttl"
        ),
        pytest.param(
            "[cache]\nmax_negative_ttl = -5",
            "cache.max_negative_ttl",
            -5,
            "must not be negative",
            id="neg-negative-ttl",
        ),
        pytest.param(
            "[cache]\nstale_max_age = -1",
            "cache.stale_max_age",
            -1,
            "must not be negative",
            id="neg-stale-age",
        ),
        pytest.param(
            "[cache]\nmin_ttl = 600\nmax_ttl = 60",
            "cache.min_ttl",
            600,
            "is larger than cache.max_ttl",
            id="min-above-max",
        ),
        pytest.param("[cache]\nsize = 0", "cache.size", 0, "positive", id="zero-cache-size"),
        pytest.param(
            "[filter]\nblock_ttl = -60",
            "filter.block_ttl",
            -60,
            "must not be negative",
            id="neg-block-ttl",
        ),
        pytest.param(
            '[filter]\nblock_response = "blockpage"',
            "filter.block_response",
            "blockpage",
            "needs filter.blockpage_ipv4 or filter.blockpage_ipv6",
            id="blockpage-without-addresses",
        ),
        pytest.param(
            '[filter]\nblock_response = "redirect"',
            "filter.block_response",
            "redirect",
            "invalid enum value 'redirect'",
            id="unknown-block-response",
        ),
        pytest.param(
            '[filter]\nblockpage_ipv4 = ["192.0.2.1", "::1"]',
            "filter.blockpage_ipv4[1]",
            "::1",
            "not an IPv4 address",
            id="blockpage-ipv4-is-v6",
        ),
        pytest.param(
            '[filter]\nblockpage_ipv4 = ["blockpage.school"]',
            "filter.blockpage_ipv4[0]",
            "blockpage.school",
            "not an IPv4 address",
            id="blockpage-ipv4-name",
        ),
        pytest.param(
            '[filter]\nblockpage_ipv6 = ["192.0.2.1"]',
            "filter.blockpage_ipv6[0]",
            "192.0.2.1",
            "not an IPv6 address",
            id="blockpage-ipv6-is-v4",
        ),
        pytest.param(
            _LIST.format(name="a", category="adult") + _LIST.format(name="a", category="gambling"),
            "lists[1].name",
            "a",
            "another list has this name",
            id="duplicate-list-names",
        ),
        pytest.param(
            _LIST.format(name="a", category="adult content"),
            "lists[0].category",
            "adult content",
            "no such category",
            id="category-with-space",
        ),
        pytest.param(
            _LIST.format(name="a", category="adult/porn"),
            "lists[0].category",
            "adult/porn",
            "no such category",
            id="category-with-slash",
        ),
        pytest.param(
            _LIST.format(name="a", category=""),
            "lists[0].category",
            "",
            "no such category",
            id="empty-category",
        ),
        pytest.param(
            _LIST.format(name="a", category="ädult"),
            "lists[0].category",
            "ädult",
            "no such category",
            id="category-not-ascii",
        ),
        pytest.param(
            _LIST.format(name=" ", category="adult"),
            "lists[0].name",
            " ",
            "a list needs a printable name",
            id="blank-list-name",
        ),
        pytest.param(
            '[[lists]]\nname = "a"\ncategory = "adult"\npath = "missing.txt"\n',
            "lists[0].path",
            "missing.txt",
            "no such file",
            id="list-file-missing",
        ),
        pytest.param(
            '[[lists]]\nname = "a"\ncategory = "adult"\nurl = "http://[::1/x"\n',
            "lists[0].url",
            "http://[::1/x",
            "not a usable URL",
            id="url-unusable",
        ),
        pytest.param(
            '[[lists]]\nname = "a"\ncategory = "adult"\nurl = "ftp://h.example/x"\n',
            "lists[0].url",
            "ftp://h.example/x",
            "expected an http:// or https:// URL",
            id="url-not-http",
        ),
        pytest.param(
            '[[lists]]\nname = "a"\ncategory = "adult"\npath = "x.txt"\nurl = "https://h/x"\n',
            "lists[0]",
            "a",
            "give exactly one of path (a file) or url (a download)",
            id="path-and-url",
        ),
        pytest.param(
            '[[lists]]\nname = "a"\ncategory = "adult"\nurl = "https://h/a.tar.gz"\n'
            'format = "ut1"\n',
            "lists[0].member",
            "",
            "a UT1 archive needs member",
            id="ut1-without-member",
        ),
        pytest.param(
            '[sources]\nenable = ["ut1-nonsense"]',
            "sources.enable[0]",
            "ut1-nonsense",
            "no such source in the catalogue",
            id="unknown-source",
        ),
        pytest.param(
            '[policy]\nactions = { gamez = "block" }',
            "policy.actions.gamez",
            "block",
            "no such category",
            id="unknown-category-action",
        ),
        pytest.param(
            '[policy]\nactions = { games = "deny" }',
            "policy.actions.games",
            "deny",
            "actions are allow, block, alert, block+alert",
            id="unknown-action",
        ),
        pytest.param(
            '[policy]\nactions = { terrorism = "alert" }',
            "policy.actions.terrorism",
            "alert",
            "locked category",
            id="locked-alert-only",
        ),
        pytest.param(
            '[[categories]]\nid = "games"\ntier = "productivity"',
            "categories[0].id",
            "games",
            "already defined",
            id="site-category-clash",
        ),
        pytest.param(
            '[[categories]]\nid = "mine"\ntier = "locked"',
            "categories[0].tier",
            "locked",
            "invalid enum value",
            id="site-category-locked",
        ),
        pytest.param(
            "[updates]\ninterval = 60",
            "updates.interval",
            60,
            "at least 600 seconds",
            id="update-interval-too-short",
        ),
        pytest.param(
            "[updates]\nmax_shrink = 1.5",
            "updates.max_shrink",
            1.5,
            "a fraction above 0, at most 1",
            id="max-shrink-over-one",
        ),
        pytest.param(
            "[clients]\nnetworks = []",
            "clients.networks",
            [],
            "at least one network",
            id="no-client-networks",
        ),
        pytest.param(
            "[cache]\nmin_ttl = 600\nmax_negative_ttl = 60",
            "cache.min_ttl",
            600,
            "is larger than cache.max_negative_ttl",
            id="min-above-max-negative",
        ),
        pytest.param(
            _LIST.format(name="a", category="adult") + 'format = "csv"\n',
            "lists[0].format",
            "csv",
            "invalid enum value 'csv'",
            id="bad-format",
        ),
        pytest.param(
            '[activity]\nqueries = "some"',
            "activity.queries",
            "some",
            "expected 'all', 'blocked', 'none'",
            id="activity-queries",
        ),
        pytest.param(
            "[activity]\nretention_days = 0",
            "activity.retention_days",
            0,
            "between 1 and 3650 days",
            id="retention",
        ),
        pytest.param(
            "[activity]\nbuffer_events = 10",
            "activity.buffer_events",
            10,
            "between 1,000 and 10,000,000 events",
            id="buffer",
        ),
        pytest.param(
            "[activity]\nwrite_interval = 0.0",
            "activity.write_interval",
            0.0,
            "between 0.05 and 60 s",
            id="write-interval",
        ),
        pytest.param(
            "[alerts]\nrepeated_blocks = -1",
            "alerts.repeated_blocks",
            -1,
            "between 0",
            id="repeated-blocks",
        ),
        pytest.param(
            "[alerts]\nrepeated_minutes = 0.0",
            "alerts.repeated_minutes",
            0.0,
            "must be more than 0 while alerts.repeated_blocks is set",
            id="repeated-minutes",
        ),
        pytest.param(
            "[alerts]\nquiet_minutes = 5000.0",
            "alerts.quiet_minutes",
            5000.0,
            "between 0 and 1440 minutes",
            id="quiet-minutes",
        ),
        pytest.param(
            '[metrics]\nlisten = "[::1]"',
            "metrics.listen",
            "[::1]",
            "no port: expected [ADDRESS]:PORT",
            id="metrics-listen",
        ),
        pytest.param(
            '[server]\nlisten = ["127.0.0.1:5353"]\n[metrics]\nlisten = "127.0.0.1:5353"',
            "metrics.listen",
            "127.0.0.1:5353",
            "the metrics need another port",
            id="metrics-on-dns-port",
        ),
        pytest.param(
            '[collector]\nurl = "http://collector.example"\nsite = "s"\ntoken_file = "x.txt"',
            "collector.url",
            "http://collector.example",
            "use https://",
            id="collector-plain-http",
        ),
        pytest.param(
            '[collector]\nurl = "ftp://collector.example"',
            "collector.url",
            "ftp://collector.example",
            "expected https://HOST",
            id="collector-scheme",
        ),
        pytest.param(
            '[collector]\nurl = "https://c.example"\nsite = "North School"\ntoken_file = "x.txt"',
            "collector.site",
            "North School",
            "the site's name as registered",
            id="collector-site",
        ),
        pytest.param(
            '[collector]\nurl = "https://c.example"\nsite = "north"\ntoken_file = "none.txt"',
            "collector.token_file",
            "none.txt",
            "cannot be read",
            id="collector-token-file",
        ),
        pytest.param(
            '[collector]\nsite = "north"',
            "collector.site",
            "north",
            "set collector.url too",
            id="collector-without-url",
        ),
        pytest.param(
            '[collector]\nurl = "https://c.example"\nsite = "north"\ntoken_file = "x.txt"\n'
            "batch_events = 0",
            "collector.batch_events",
            0,
            "must be from 1 to 50000",
            id="collector-batch-events",
        ),
        pytest.param(
            '[collector]\nurl = "https://c.example"\nsite = "north"\ntoken_file = "x.txt"\n'
            "heartbeat_interval = 0.5",
            "collector.heartbeat_interval",
            0.5,
            "must be from 1 to 3600",
            id="collector-heartbeat-interval",
        ),
    ],
)
def test_errors_name_file_key_value_and_reason(
    tmp_path: Path, text: str, key: str, value: Any, reason: str
) -> None:
    (tmp_path / "x.txt").write_text("listed.example\n", encoding="utf-8")
    err = config_error(text, tmp_path)
    assert err.file == FILE
    assert err.key == key
    assert err.value == value
    assert reason in err.reason
    assert err.line is not None
    assert str(err) == f"{FILE}:{err.line}: {key} = {value!r}: {err.reason}"
    # The line named writes the key, or the table or value holding it.
    names = [part for part in key_path(key) if isinstance(part, str)]
    assert any(name in text.splitlines()[err.line - 1] for name in names)


@pytest.mark.parametrize("missing", ["name", "category"])
def test_missing_required_list_key(tmp_path: Path, missing: str) -> None:
    fields = {"name": '"a"', "category": '"adult"', "path": '"x.txt"'}
    del fields[missing]
    text = "[[lists]]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items())
    err = config_error(text, tmp_path)
    assert err.key == f"lists[0].{missing}"
    assert err.reason == "required key is missing"
    assert str(err) == f"{FILE}:1: lists[0].{missing}: required key is missing"


@pytest.mark.parametrize("text", ["[cache\nsize = 1", "size = ", "a = 1\na = 2", "[x]]"])
def test_invalid_toml(tmp_path: Path, text: str) -> None:
    err = config_error(text, tmp_path)
    assert err.key == ""
    assert err.reason.startswith("not valid TOML: ")
    assert str(err).startswith(f"{FILE}: not valid TOML: ")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    err = config_error("colour = 1\n", tmp_path)
    assert err.key == "colour"
    assert err.value == 1
    assert err.reason == "unknown key"
    assert str(err) == f"{FILE}:1: colour = 1: unknown key"


def test_unknown_top_level_key_is_refused(tmp_path: Path) -> None:
    # Whatever the wording, an unknown section must stop the load and be named.
    err = config_error("[servre]\nlisten = []\n", tmp_path)
    assert "servre" in str(err)
    assert str(err).startswith(FILE)


# --- overrides and loading files ------------------------------------------------------------------


def test_overrides_edit_the_toml_before_it_is_checked(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    def override(raw: dict[str, Any]) -> None:
        seen.append(copy.deepcopy(raw))
        raw.setdefault("server", {})["listen"] = ["127.0.0.1:5454"]

    c = parse_text('[server]\nlisten = ["127.0.0.1:53"]\n', tmp_path, overrides=override)
    assert seen == [{"server": {"listen": ["127.0.0.1:53"]}}]
    assert c.listen == (("127.0.0.1", 5454),)


def test_a_bad_override_is_refused_like_a_bad_file(tmp_path: Path) -> None:
    def override(raw: dict[str, Any]) -> None:
        raw["upstream"] = {"servers": ["tcp://resolver.example"]}

    with pytest.raises(ConfigError) as info:
        parse_text("", tmp_path, overrides=override)
    assert info.value.key == "upstream.servers[0]"
    assert "'resolver.example' is not an IP address" in info.value.reason


def test_load_a_file(tmp_path: Path) -> None:
    (tmp_path / "conf" / "lists").mkdir(parents=True)
    (tmp_path / "conf" / "lists" / "a.txt").write_text("a.example\n", encoding="utf-8")
    path = tmp_path / "conf" / "agent.toml"
    path.write_text(
        '[server]\nlisten = ["127.0.0.1:5300"]\n'
        '[[lists]]\nname = "a"\ncategory = "adult"\npath = "lists/a.txt"\n',
        encoding="utf-8",
    )
    c = load(path)
    assert c.source == str(path)
    assert c.listen == (("127.0.0.1", 5300),)
    assert site_lists(c)[0].path == tmp_path / "conf" / "lists" / "a.txt"
    assert c.state_dir == Path("/var/lib/schoolgate")  # only the bundled default moves it


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[cache]\nsize = -1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}:2: cache.size = -1: must be a positive number"


def test_load_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: cannot read: ")
    assert info.value.key == ""


def test_load_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nstate_dir = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}: not UTF-8 text"


def test_load_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[cache]\nsize = 10\n", encoding="utf-8")
    c = load(path, lambda raw: raw["cache"].__setitem__("size", 99))
    assert c.cache.size == 99


# --- the bundled default -------------------------------------------------------------------------


def test_bundled_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    c = load(None)
    assert c.source == "(bundled default config)"
    assert c.listen == (("127.0.0.1", 5353), ("::1", 5353))
    assert c.state_dir == tmp_path / "xdg" / "schoolgate"
    assert c.client_networks == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert c.filter.block_response == "null"
    bundled = c.lists[0]
    assert bundled.name == "schoolgate-encrypted-dns"
    assert bundled.category == "encrypted-dns"
    assert bundled.format is ListFormat.DOMAINS
    assert bundled.path.is_file()
    _, result = read_source(
        ListSource(bundled.name, bundled.category, bundled.path, bundled.format)
    )
    assert result.report.entries > 0
    assert result.report.invalid == 0
    assert result.report.unsupported == 0


def test_redacted_urls_hide_passwords_and_query_strings() -> None:
    assert redact_url("https://u:secret@feed.example/l.txt?token=abc") == (
        "https://u:***@feed.example/l.txt?***"
    )
    assert redact_url("https://feed.example/l.txt") == "https://feed.example/l.txt"


def test_bundled_default_with_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))

    def override(raw: dict[str, Any]) -> None:
        raw["server"]["listen"] = ["127.0.0.1:5454"]
        raw["server"]["state_dir"] = str(tmp_path / "elsewhere")

    c = load(None, override)
    assert c.listen == (("127.0.0.1", 5454),)
    assert c.state_dir == tmp_path / "elsewhere"


def test_bundled_default_with_a_bad_override(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        load(None, lambda raw: raw["server"].__setitem__("listen", ["::1:53"]))
    assert str(info.value).startswith("(bundled default config): server.listen[0] = '::1:53': ")


def test_user_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert user_state_dir() == tmp_path / "state" / "schoolgate"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_state_dir() == tmp_path / "home" / ".local" / "state" / "schoolgate"


# --- addresses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:53", ("127.0.0.1", 53)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:5353", ("::1", 5353)),
        ("[2001:db8::1]:65535", ("2001:db8::1", 65535)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("127.0.0.1", "expected ADDRESS:PORT"),
        (":53", "expected ADDRESS:PORT"),
        ("::1:53", "brackets"),
        ("[::1]", "no port"),
        ("[::1]:", "'' is not a port number"),
        ("127.0.0.1:dns", "'dns' is not a port number"),
        ("127.0.0.1:-1", "is not a port number"),
        ("127.0.0.1:70000", "'70000' is not a port number"),
        ("example.com:53", "'example.com' is not an IP address"),
        ("[example.com]:53", "'example.com' is not an IP address"),
    ],
)
def test_parse_address_errors(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("[", r"\[")):
        parse_address(text)


# --- groups and identity -------------------------------------------------------------------------

_GROUPS = """
[policy]
actions = { shopping = "block" }

[[groups]]
name = "ks2"
age_tier = "ks2"
addresses = ["10.20.2.0/24", "fd00:2::/64"]
hostnames = ["KS2-*"]

[[groups]]
name = "staff"
age_tier = "staff"
macs = ["AA-BB-CC-00-00-01"]
actions = { games = "block" }

[[groups]]
name = "guests"
age_tier = "guest"
default = true

[identity]
lease_files = ["dnsmasq.leases"]
refresh = 60
"""


def test_groups_and_identity(tmp_path: Path) -> None:
    c = parse_text(_GROUPS, tmp_path)
    assert [g.name for g in c.groups] == ["ks2", "staff", "guests"]
    assert c.default_group.name == "guests" and c.age_tier is AgeTier.GUEST
    ks2, staff, guests = c.groups
    assert ks2.rule.hostnames == ("ks2-*",)
    assert [str(n) for n in ks2.rule.networks] == ["10.20.2.0/24", "fd00:2::/64"]
    assert staff.rule.macs == frozenset({"aa:bb:cc:00:00:01"})
    assert ks2.actions["games"] is Action.BLOCK and staff.actions["games"] is Action.BLOCK
    assert guests.actions["games"] is Action.ALLOW
    # [policy] actions apply to every group; a group's own come on top.
    assert all(g.actions["shopping"] is Action.BLOCK for g in c.groups)
    assert c.identity.lease_files == (tmp_path / "dnsmasq.leases",)
    assert c.identity.refresh == 60 and c.identity.neighbours


def test_without_groups_there_is_one_default_group(tmp_path: Path) -> None:
    c = parse_text('[policy]\nage_tier = "ks2"\n', tmp_path)
    [group] = c.groups
    assert (group.name, group.default, group.age_tier) == ("default", True, AgeTier.KS2)


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        pytest.param(
            '[[groups]]\nname = "a"\n[[groups]]\nname = "b"\n',
            "groups",
            "exactly one group must be the default",
            id="no-default",
        ),
        pytest.param(
            '[[groups]]\nname = "a"\ndefault = true\n[[groups]]\nname = "b"\ndefault = true\n',
            "groups",
            "exactly one group must be the default",
            id="two-defaults",
        ),
        pytest.param(
            '[[groups]]\nname = "a"\ndefault = true\n[[groups]]\nname = "a"\n',
            "groups[1].name",
            "another group has this name",
            id="same-name",
        ),
        pytest.param(
            '[[groups]]\nname = "a b"\ndefault = true\n',
            "groups[0].name",
            "use letters",
            id="bad-name",
        ),
        pytest.param(
            '[[groups]]\nname = "a"\ndefault = true\nmacs = ["aa:bb"]\n',
            "groups[0].macs[0]",
            "not a MAC address",
            id="bad-mac",
        ),
        pytest.param(
            '[[groups]]\nname = "a"\ndefault = true\naddresses = ["10.0.0.300"]\n',
            "groups[0].addresses[0]",
            "not an address",
            id="bad-address",
        ),
        pytest.param(
            '[[groups]]\nname = "a"\ndefault = true\naddresses = ["10.0.0.0/8"]\n'
            '[[groups]]\nname = "b"\naddresses = ["10.1.0.0/16"]\n',
            "groups[1].order",
            "share networks 10.0.0.0/8 and 10.1.0.0/16",
            id="overlap-without-order",
        ),
        pytest.param(
            '[[groups]]\nname = "a"\ndefault = true\nmacs = ["aa:bb:cc:dd:ee:ff"]\norder = 1\n'
            '[[groups]]\nname = "b"\nmacs = ["AA:BB:CC:DD:EE:FF"]\norder = 1\n',
            "groups[1].order",
            "share MAC address aa:bb:cc:dd:ee:ff",
            id="overlap-same-order",
        ),
        pytest.param(
            '[[groups]]\nname = "a"\ndefault = true\nhostnames = ["ks2-*"]\n'
            '[[groups]]\nname = "b"\nhostnames = ["*-laptop"]\n',
            "groups[1].order",
            "share name patterns 'ks2-*' and '*-laptop'",
            id="patterns-one-name-could-match",
        ),
        pytest.param(
            '[[groups]]\nname = "a"\ndefault = true\nhostnames = ["ks2-*.school.example"]\n',
            "groups[0].hostnames[0]",
            "without their domain",
            id="pattern-with-a-domain",
        ),
        pytest.param(
            '[[schedules]]\nname = "x"\ndays = ["mon"]\n'
            '[[schedules]]\nname = "x"\ndays = ["tue"]\n',
            "schedules[1].name",
            "another schedule has this name",
            id="same-schedule-name",
        ),
        pytest.param(
            '[[groups]]\nname = "a"\ndefault = true\nactions = { terrorism = "allow" }\n',
            "groups[0].actions.terrorism",
            "locked category",
            id="group-allows-locked",
        ),
        pytest.param(
            "[identity]\nrefresh = 1", "identity.refresh", "between 5 and 3600", id="refresh"
        ),
    ],
)
def test_group_errors(tmp_path: Path, text: str, key: str, reason: str) -> None:
    err = config_error(text, tmp_path)
    assert err.key == key
    assert reason in err.reason


def test_schedules_change_a_groups_actions(tmp_path: Path) -> None:
    c = parse_text(
        '[[schedules]]\nname = "lessons"\ndays = ["mon-fri"]\ntimes = ["08:45-15:15"]\n'
        '[[schedules]]\nname = "club"\ndays = ["wed"]\ntimes = ["15:00-16:00"]\n'
        '[[groups]]\nname = "staff"\nage_tier = "staff"\ndefault = true\n'
        'schedules = { lessons = { social = "block", games = "block" },'
        ' club = { games = "allow" } }\n',
        tmp_path,
    )
    staff = c.groups[0]
    assert c.group_actions(staff, frozenset())["social"] is Action.ALLOW
    lessons = c.group_actions(staff, frozenset({"lessons"}))
    assert lessons["social"] is Action.BLOCK and lessons["games"] is Action.BLOCK
    both = c.group_actions(staff, frozenset({"lessons", "club"}))
    assert both["games"] is Action.ALLOW and both["social"] is Action.BLOCK  # later one wins


def test_overlapping_groups_with_an_order_are_accepted(tmp_path: Path) -> None:
    c = parse_text(
        '[[groups]]\nname = "a"\ndefault = true\naddresses = ["10.0.0.0/8"]\norder = 2\n'
        '[[groups]]\nname = "b"\naddresses = ["10.1.0.0/16"]\norder = 1\n',
        tmp_path,
    )
    assert [g.rule.order for g in c.groups] == [2, 1]


def test_safe_search_follows_the_age_tier_unless_told(tmp_path: Path) -> None:
    c = parse_text(
        '[policy]\nyoutube = "moderate"\n'
        '[[groups]]\nname = "ks1"\nage_tier = "foundation"\naddresses = ["10.1.0.0/16"]\n'
        '[[groups]]\nname = "staff"\nage_tier = "staff"\naddresses = ["10.9.0.0/16"]\n'
        '[[groups]]\nname = "lab"\nage_tier = "secondary"\naddresses = ["10.5.0.0/16"]\n'
        'safesearch = ["google", "bing"]\nyoutube = "off"\n'
        '[[groups]]\nname = "guests"\nage_tier = "guest"\ndefault = true\nsafesearch = false\n',
        tmp_path,
    )
    ks1, staff, lab, guests = c.groups
    assert "google" in ks1.safesearch and "youtube" not in ks1.safesearch
    assert ks1.youtube is YouTubeMode.MODERATE  # [policy] speaks for every group
    assert staff.safesearch == () and staff.youtube is YouTubeMode.MODERATE
    assert lab.safesearch == ("google", "bing") and lab.youtube is YouTubeMode.OFF
    assert guests.safesearch == ()


def test_the_default_group_gets_its_tiers_safe_search(tmp_path: Path) -> None:
    (group,) = parse_text('[policy]\nage_tier = "ks2"\n', tmp_path).groups
    assert group.youtube is YouTubeMode.STRICT
    assert text_to_wire("www.google.com") in group.rewrites()


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('[policy]\nsafesearch = ["altavista"]\n', "policy.safesearch[0]", "not an engine"),
        ('[policy]\nsafesearch = ["youtube"]\n', "policy.safesearch[0]", "its own key"),
        (
            '[[groups]]\nname = "a"\ndefault = true\nsafesearch = ["bing", "nope"]\n',
            "groups[0].safesearch[1]",
            "known: google, bing",
        ),
        ('[policy]\nyoutube = "loose"\n', "policy.youtube", "loose"),
        ("[policy]\nsafesearch = 1\n", "policy.safesearch", "expected bool | array"),
    ],
)
def test_safe_search_errors(tmp_path: Path, text: str, key: str, reason: str) -> None:
    err = config_error(text, tmp_path)
    assert err.key == key
    assert reason in err.reason


def test_the_block_page_listens_on_the_block_page_addresses_unless_told(tmp_path: Path) -> None:
    c = parse_text(
        '[filter]\nblock_response = "blockpage"\nblockpage_ipv4 = ["10.0.0.53"]\n'
        'blockpage_ipv6 = ["fd00::53"]\n[blockpage]\nenabled = true\nlanguage = "vi"\n',
        tmp_path,
    )
    assert c.blockpage.enabled and c.blockpage.language == "vi"
    assert c.blockpage.listen == (("10.0.0.53", 80), ("fd00::53", 80))
    told = parse_text('[blockpage]\nenabled = true\nlisten = ["[::1]:8080"]\n', tmp_path)
    assert told.blockpage.listen == (("::1", 8080),)
    assert parse_text("", tmp_path).blockpage.enabled is False


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[blockpage]\nenabled = true\n", "blockpage.listen", "nothing to listen on"),
        ('[blockpage]\nlisten = ["10.0.0.1"]\n', "blockpage.listen[0]", "ADDRESS:PORT"),
        ('[blockpage]\nschool_name = "a\\nb"\n', "blockpage.school_name", "one line"),
        ("[blockpage]\nmax_requests_per_hour = 0\n", "blockpage.max_requests_per_hour", "between"),
        ('[blockpage]\nlanguage = "fr"\n', "blockpage.language", "fr"),
        (
            '[server]\nlisten = ["127.0.0.1:8053"]\n'
            '[blockpage]\nenabled = true\nlisten = ["127.0.0.1:8053"]\n',
            "blockpage.listen[0]",
            "the DNS service listens there",
        ),
    ],
)
def test_block_page_errors(tmp_path: Path, text: str, key: str, reason: str) -> None:
    err = config_error(text, tmp_path)
    assert err.key == key
    assert reason in err.reason
