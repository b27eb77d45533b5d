"""``schoolgate-collector user`` as a district's IT team runs it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolgate.server.auth import Principal, Role
from schoolgate.server.cli import main
from schoolgate.server.db.engine import open_engine
from schoolgate.server.users import UserStore
from tests.server.test_cli import config


@pytest.fixture
def conf(tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]) -> str:
    path = str(config(tmp_path, database_url))
    assert main(["init-db", "--config", path]) == 0
    assert main(["site", "add", "north-primary", "--config", path]) == 0
    assert main(["site", "add", "south-academy", "--config", path]) == 0
    capsys.readouterr()
    return path


@pytest.fixture
def store(database_url: str) -> Iterator[UserStore]:
    engine = open_engine(database_url)
    yield UserStore(engine)
    engine.dispose()


def password_file(tmp_path: Path, password: str) -> str:
    path = tmp_path / "password"
    path.write_text(password + "\n", encoding="utf-8")
    return str(path)


def test_add_list_and_disable_users(
    conf: str, tmp_path: Path, store: UserStore, capsys: pytest.CaptureFixture[str]
) -> None:
    good = password_file(tmp_path, "a long enough passphrase")
    add = ["user", "add", "--config", conf, "--password-file", good]
    assert main([*add, "Lead", "--role", "safeguarding-lead", "--site", "north-primary"]) == 0
    assert "user lead added: safeguarding-lead, sees north-primary" in capsys.readouterr().out
    assert main([*add, "head", "--role", "admin"]) == 0
    assert "sees every site" in capsys.readouterr().out

    for args, message in (
        (["tech", "--role", "technician"], "give --site"),
        (["tech", "--role", "admin", "--site", "north-primary"], "admin sees every site"),
        (["tech", "--role", "viewer", "--site", "nowhere"], "no site named nowhere"),
        (["lead", "--role", "viewer", "--site", "north-primary"], "exists already"),
    ):
        assert main([*add, *args]) == 2, args
        assert message in capsys.readouterr().err
    short = password_file(tmp_path, "too short")
    assert (
        main(["user", "add", "x", "--role", "admin", "--config", conf, "--password-file", short])
        == 2
    )
    assert "at least 12 characters" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*add, "x", "--role", "superuser"])
    capsys.readouterr()

    assert main(["user", "list", "--config", conf]) == 0
    listed = capsys.readouterr().out
    assert "lead" in listed and "safeguarding-lead" in listed and "north-primary" in listed
    assert "(all)" in listed and "argon2" not in listed

    assert store.sign_in("lead", "a long enough passphrase", lifetime=60) is not None
    assert main(["user", "disable", "LEAD", "--config", conf]) == 0
    assert "no longer work" in capsys.readouterr().out
    assert store.sign_in("lead", "a long enough passphrase", lifetime=60) is None
    assert main(["user", "list", "--config", conf]) == 0
    assert "disabled" in capsys.readouterr().out
    assert main(["user", "disable", "ghost", "--config", conf]) == 1
    assert "no user named 'ghost'" in capsys.readouterr().err


def test_the_password_is_asked_twice(
    conf: str, store: UserStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter(["first passphrase", "second passphrase", "short", "the same passphrase"] * 2)
    monkeypatch.setattr("getpass.getpass", lambda _prompt="": next(answers))
    add = ["user", "add", "viewer", "--role", "viewer", "--site", "south-academy"]
    assert main([*add, "--config", conf]) == 2
    assert "the two passwords differ" in capsys.readouterr().err
    assert main([*add, "--config", conf]) == 2  # "short": refused before the second prompt
    assert "at least 12 characters" in capsys.readouterr().err
    answers = iter(["the same passphrase", "the same passphrase"])
    assert main([*add, "--config", conf]) == 0
    # A user that cannot be added is refused before the password is asked for.
    answers = iter([])
    assert main([*add, "--config", conf]) == 2
    assert "exists already" in capsys.readouterr().err
    signed = store.sign_in("viewer", "the same passphrase", lifetime=60)
    assert signed is not None and signed.principal.role is Role.VIEWER


def test_an_api_token_is_printed_once_and_works(
    conf: str, tmp_path: Path, store: UserStore, capsys: pytest.CaptureFixture[str]
) -> None:
    good = password_file(tmp_path, "a long enough passphrase")
    assert (
        main(
            [
                "user",
                "add",
                "tech",
                "--role",
                "technician",
                "--site",
                "north-primary",
                "--password-file",
                good,
                "--config",
                conf,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(["user", "token", "tech", "--label", "nightly", "--expires", "90d", "--config", conf])
        == 0
    )
    out = capsys.readouterr().out
    assert "valid until" in out
    token = out.strip().splitlines()[-1]
    assert token.startswith("sgu_")
    principal = store.principal(token)
    assert isinstance(principal, Principal) and principal.name == "tech"

    assert main(["user", "token", "tech", "--config", conf]) == 0
    assert "until the user is disabled" in capsys.readouterr().out
    assert main(["user", "token", "tech", "--expires", "soon", "--config", conf]) == 2
    assert "--expires 'soon'" in capsys.readouterr().err
    assert main(["user", "token", "ghost", "--config", conf]) == 1
    assert main(["user", "disable", "tech", "--config", conf]) == 0
    assert not isinstance(store.principal(token), Principal)
    assert main(["user", "token", "tech", "--config", conf]) == 1
    assert "is disabled" in capsys.readouterr().err
