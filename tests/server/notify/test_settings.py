"""The [notify] section: defaults, secrets read from their files, and every mistake named by
its key before the collector starts."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from schoolgate.agent.config import ConfigError
from schoolgate.server.notify.settings import NotifySettings
from schoolgate.server.settings import parse
from tests.support.certs import ScratchPKI

SMTP = (
    '[notify.smtp]\nhost = "smtp.district.example"\nusername = "sg"\n'
    'password_file = "smtp.password"\nsender = "schoolgate@district.example"\n'
)
HOOK = '[notify.webhook]\nurl = "https://hooks.example/x?key=1"\nsecret_file = "webhook.secret"\n'
TO_ALL = '[[notify.recipients]]\nsites = ["*"]\nemail = ["it@district.example"]\nwebhook = true\n'


def notify(text: str, base: Path) -> NotifySettings:
    found = parse(text, "collector.toml", base).notify
    assert found is not None
    return found


def test_without_a_notify_section_nothing_is_set_up(tmp_path: Path) -> None:
    assert parse("", "collector.toml", tmp_path).notify is None


def test_the_defaults_and_the_secrets(secrets: Path) -> None:
    n = notify("[notify]\n" + SMTP + HOOK + TO_ALL, secrets)
    assert n.immediate == {"critical", "high"}
    assert n.digest_at == time(7, 30)
    assert (n.max_immediate_per_day, n.interval_seconds, n.admin_url) == (10, 30.0, "")
    assert n.smtp is not None and n.webhook is not None
    assert (n.smtp.port, n.smtp.tls, n.smtp.timeout, n.smtp.ca_file) == (587, "starttls", 30, None)
    assert n.smtp.password == "correct horse battery staple"  # the first line, no line break
    assert "correct horse" not in repr(n)  # never in a log line or a traceback
    assert n.webhook.secret == b"a webhook secret of enough length"
    assert n.inbox_link("north-primary") == ""
    assert n.summary() == (
        "email via smtp.district.example:587 (starttls) to 1 address; webhook to hooks.example; "
        "at once: critical, high (at most 10 a school a day), the rest in a digest at 07:30"
    )


def test_recipients_by_school(secrets: Path) -> None:
    text = (
        '[notify]\nadmin_url = "https://collector.example/admin/"\n'
        + SMTP
        + HOOK
        + '[[notify.recipients]]\nsites = ["north-primary"]\nemail = ["Lead@north.example"]\n'
        + '[[notify.recipients]]\nsites = ["*"]\nemail = ["it@district.example"]\n'
        + '[[notify.recipients]]\nsites = ["south-academy"]\nwebhook = true\n'
        + '[[notify.recipients]]\nsites = ["south-academy"]\nemail = ["it@district.example"]\n'
    )
    n = notify(text, secrets)
    assert n.emails_for("north-primary") == ("it@district.example", "Lead@north.example")
    assert n.emails_for("south-academy") == ("it@district.example",)
    assert n.channels_for("north-primary") == ("email",)
    assert n.channels_for("south-academy") == ("email", "webhook")
    assert n.inbox_link("north-primary") == (
        "https://collector.example/admin/alerts?site=north-primary"
    )


def test_implicit_tls_defaults_to_port_465(secrets: Path) -> None:
    n = notify("[notify]\n" + SMTP + 'tls = "implicit"\n', secrets)
    assert n.smtp is not None and n.smtp.port == 465


def test_a_private_ca_is_read_at_load(secrets: Path, pki: ScratchPKI) -> None:
    n = notify("[notify]\n" + SMTP + f'ca_file = "{pki.ca_file}"\n', secrets)
    assert n.smtp is not None and n.smtp.ca_file == pki.ca_file
    n.smtp.tls_context()


@pytest.mark.parametrize(
    ("text", "key", "why"),
    [
        ('[notify]\nimmediate = ["urgent"]\n', "notify.immediate", "not a severity"),
        ('[notify]\ndigest_at = "7:30"\n', "notify.digest_at", "HH:MM"),
        ('[notify]\ndigest_at = "24:00"\n', "notify.digest_at", "HH:MM"),
        ("[notify]\nmax_immediate_per_day = 0\n", "notify.max_immediate_per_day", ">= 1"),
        ("[notify]\ninterval_seconds = 0.5\n", "notify.interval_seconds", ">= 1"),
        ('[notify]\nadmin_url = "collector.example"\n', "notify.admin_url", "http(s) URL"),
        ('[notify]\nadmin_url = "https://c.example/?a=1"\n', "notify.admin_url", "no query"),
        ("[notify]\nsmtp_host = 1\n", "smtp_host", "unknown field"),
        ('[notify.smtp]\nsender = "a@b.example"\n', "notify.smtp.host", "is needed"),
        ('[notify.smtp]\nhost = "smtp.example"\n', "notify.smtp.sender", "an address"),
        (
            '[notify.smtp]\nhost = "s.example"\nsender = "a@b.example"\nusername = "u"\n',
            "notify.smtp.password_file",
            "needed with smtp.username",
        ),
        (
            '[notify.smtp]\nhost = "s.example"\nsender = "a@b.example"\nusername = "u"\n'
            'password_file = "missing.password"\n',
            "notify.smtp.password_file",
            "cannot read: No such file",
        ),
        (
            '[notify.smtp]\nhost = "s.example"\nsender = "a@b.example"\nusername = "u"\n'
            'password_file = "smtp.password"\ntls = "none"\n',
            "notify.smtp.tls",
            "never sent unencrypted",
        ),
        (
            '[notify.smtp]\nhost = "s.example"\nsender = "a@b.example"\ntls = "ssl"\n',
            "notify.smtp.tls",
            "use starttls, implicit, none",
        ),
        (
            '[notify.smtp]\nhost = "s.example"\nsender = "a@b.example"\nca_file = "nope.pem"\n',
            "notify.smtp.ca_file",
            "not a readable PEM file",
        ),
        (
            '[notify.webhook]\nurl = "http://hooks.example/"\nsecret_file = "webhook.secret"\n',
            "notify.webhook.url",
            "plain http only to this machine",
        ),
        ('[notify.webhook]\nurl = "https://hooks.example/"\n', "notify.webhook.secret_file", ""),
        (
            '[notify.webhook]\nurl = "https://hooks.example/"\nsecret_file = "short.secret"\n',
            "notify.webhook.secret_file",
            "at least 16",
        ),
        (
            "[notify]\n[[notify.recipients]]\nsites = []\nwebhook = true\n",
            "notify.recipients[0].sites",
            "name the schools",
        ),
        (
            '[notify]\n[[notify.recipients]]\nsites = ["North Primary"]\nwebhook = true\n',
            "notify.recipients[0].sites",
            "not a school's name",
        ),
        (
            "[notify]\n" + SMTP + '[[notify.recipients]]\nsites = ["*"]\nemail = ["lead@"]\n',
            "notify.recipients[0].email",
            "not an address",
        ),
        (
            '[notify]\n[[notify.recipients]]\nsites = ["*"]\nemail = ["a@b.example"]\n',
            "notify.recipients[0].email",
            "needs a [notify.smtp]",
        ),
        (
            '[notify]\n[[notify.recipients]]\nsites = ["*"]\nwebhook = true\n',
            "notify.recipients[0].webhook",
            "needs a [notify.webhook]",
        ),
        (
            "[notify]\n" + SMTP + '[[notify.recipients]]\nsites = ["*"]\n',
            "notify.recipients[0]",
            "tells nobody",
        ),
    ],
)
def test_a_mistake_is_named_by_its_key(secrets: Path, text: str, key: str, why: str) -> None:
    (secrets / "short.secret").write_text("too short\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        parse(text, "collector.toml", secrets)
    assert key in str(caught.value)
    assert why in str(caught.value)
    assert "correct horse" not in str(caught.value)


def test_a_password_to_a_relay_on_this_machine_may_go_unencrypted(secrets: Path) -> None:
    text = (
        '[notify.smtp]\nhost = "127.0.0.1"\nport = 25\ntls = "none"\nusername = "u"\n'
        'password_file = "smtp.password"\nsender = "a@b.example"\n'
    )
    n = notify(text, secrets)
    assert n.smtp is not None and n.smtp.tls == "none"


def test_plain_http_to_this_machine_is_allowed(secrets: Path) -> None:
    text = '[notify.webhook]\nurl = "http://127.0.0.1:8081/"\nsecret_file = "webhook.secret"\n'
    n = notify(text, secrets)
    assert n.webhook is not None and n.webhook.url == "http://127.0.0.1:8081/"
