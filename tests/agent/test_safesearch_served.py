"""SafeSearch and YouTube Restricted Mode over real DNS: each group's answers lead where its
settings say."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.conftest import AgentFactory
from tests.support.agent import AgentThread
from tests.support.upstream import FakeUpstream

GROUPS = """
[[groups]]
name = "ks2"
age_tier = "ks2"
addresses = ["127.0.0.2"]

[[groups]]
name = "sixth-form"
age_tier = "secondary"
addresses = ["127.0.0.3"]
safesearch = ["bing"]

[[groups]]
name = "staff"
age_tier = "staff"
addresses = ["127.0.0.4"]

[[groups]]
name = "guests"
age_tier = "guest"
default = true
deny = ["youtube.com"]

[identity]
neighbours = false
"""


def ask(
    agent: AgentThread, name: str, source: str, rdtype: str = "A", **kwargs: object
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kwargs)  # type: ignore[arg-type]
    return dns.query.udp(query, "127.0.0.1", port=agent.port, timeout=3, source=source)


def chain(reply: dns.message.Message) -> list[str]:
    return [f"{rrset.name} {rr.to_text()}" for rrset in reply.answer for rr in rrset]


@pytest.fixture
def agent(make_agent: AgentFactory, upstream: FakeUpstream) -> AgentThread:
    upstream.add("forcesafesearch.google.com", "A", "216.239.38.120")
    upstream.add("forcesafesearch.google.com", "AAAA", "2001:4860:4802:32::78")
    upstream.add("strict.bing.com", "A", "204.79.197.220")
    upstream.add("restrict.youtube.com", "A", "216.239.38.120")
    upstream.add("restrictmoderate.youtube.com", "A", "216.239.38.119")
    return make_agent(GROUPS)


def test_pupils_get_google_safesearch_and_staff_do_not(agent: AgentThread) -> None:
    for _ in range(3):  # upstream, then the cache, then the memo of the finished answer
        reply = ask(agent, "WWW.Google.com", "127.0.0.2")
        assert reply.rcode() == dns.rcode.NOERROR
        assert chain(reply) == [
            "WWW.Google.com. forcesafesearch.google.com.",
            "forcesafesearch.google.com. 216.239.38.120",
        ]
        assert str(reply.question[0].name) == "WWW.Google.com."  # the client's letter case
    assert chain(ask(agent, "www.google.com", "127.0.0.4")) == ["www.google.com. 192.0.2.1"]
    aaaa = ask(agent, "google.co.uk", "127.0.0.2", "AAAA")
    assert chain(aaaa) == [
        "google.co.uk. forcesafesearch.google.com.",
        "forcesafesearch.google.com. 2001:4860:4802:32::78",
    ]
    # Only the names in the table: a name below them is the engine's own business.
    assert chain(ask(agent, "mail.google.com", "127.0.0.2")) == ["mail.google.com. 192.0.2.1"]


def test_each_group_gets_its_own_youtube_mode(agent: AgentThread) -> None:
    strict = chain(ask(agent, "www.youtube.com", "127.0.0.2"))
    moderate = chain(ask(agent, "www.youtube.com", "127.0.0.3"))
    assert strict[0] == "www.youtube.com. restrict.youtube.com."
    assert moderate[0] == "www.youtube.com. restrictmoderate.youtube.com."
    assert chain(ask(agent, "www.youtube.com", "127.0.0.4")) == ["www.youtube.com. 192.0.2.1"]


def test_a_group_listing_engines_gets_only_those(agent: AgentThread) -> None:
    assert chain(ask(agent, "www.bing.com", "127.0.0.3"))[0] == "www.bing.com. strict.bing.com."
    assert chain(ask(agent, "www.google.com", "127.0.0.3")) == ["www.google.com. 192.0.2.1"]


def test_a_blocked_category_wins_over_a_safe_mode(agent: AgentThread) -> None:
    # Guests deny YouTube: blocked, not restricted.
    assert chain(ask(agent, "www.youtube.com", "127.0.0.9")) == ["www.youtube.com. 0.0.0.0"]


def test_edns_and_other_types_get_a_consistent_answer(agent: AgentThread) -> None:
    reply = ask(agent, "www.google.com", "127.0.0.2", use_edns=0, want_dnssec=True)
    assert reply.edns == 0 and reply.ednsflags & dns.flags.DO
    assert chain(reply)[0] == "www.google.com. forcesafesearch.google.com."
    # An HTTPS question gets the CNAME and the target's own answer (none here), never the
    # engine's own records, which could carry addresses around the safe mode.
    https = ask(agent, "www.google.com", "127.0.0.2", "HTTPS")
    assert https.rcode() == dns.rcode.NOERROR
    assert chain(https) == ["www.google.com. forcesafesearch.google.com."]


def test_a_failed_target_is_a_servfail(make_agent: AgentFactory, upstream: FakeUpstream) -> None:
    agent = make_agent(GROUPS)
    upstream.behaviour.servfail = True
    assert ask(agent, "www.google.com", "127.0.0.2").rcode() == dns.rcode.SERVFAIL
    assert agent.agent is not None and agent.agent.counters.rewritten == 1
