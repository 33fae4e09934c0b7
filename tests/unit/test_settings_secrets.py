"""Secret settings: <NAME>_FILE like Docker/Kubernetes secrets, conflicts and bad files reported
without the value, API tokens and their scopes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from processor.api.auth import Tokens
from processor.settings import ProcessorSettings
from service_settings import problems

URL = "mongodb://app:p%40ss%3Aw%2Frd@db.example:27017/gpu_cost"
READ = "read-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("MONGO_", "API_")):
            monkeypatch.delenv(name)


def errors(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as info:
        ProcessorSettings()
    found = problems(info.value, ProcessorSettings)
    # What is printed (the traceback's message, the report) never holds a secret.
    text = str(info.value) + "\n".join(found)
    for secret_value in (URL, READ, ADMIN, "short-one", "tooshort"):
        assert secret_value not in text
    return found


def secret(tmp_path: Path, text: str, name: str = "secret") -> str:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    return str(path)


def test_mongo_url_is_read_from_its_file_trailing_newline_stripped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONGO_URL_FILE", secret(tmp_path, URL + "\n"))
    settings = ProcessorSettings()
    assert settings.mongo_url.get_secret_value() == URL
    assert "p%40ss" not in repr(settings)


def test_token_lists_are_read_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_READ_TOKENS_FILE", secret(tmp_path, f"{READ}, {READ}x\n", "r"))
    monkeypatch.setenv("api_admin_tokens_file", secret(tmp_path, ADMIN, "a"))  # any case
    settings = ProcessorSettings()
    assert [t.get_secret_value() for t in settings.api_read_tokens or ()] == [READ, READ + "x"]
    assert [t.get_secret_value() for t in settings.api_admin_tokens or ()] == [ADMIN]
    assert settings.auth_enabled


def test_value_and_file_both_set_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = errors(monkeypatch, MONGO_URL=URL, MONGO_URL_FILE=secret(tmp_path, URL))
    assert found == ["MONGO_URL: both MONGO_URL and MONGO_URL_FILE are set; set only one"]


def test_unreadable_and_empty_files_are_named_with_every_other_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope"
    found = errors(
        monkeypatch,
        MONGO_URL_FILE=str(missing),
        API_READ_TOKENS_FILE=secret(tmp_path, "\n"),
        API_ADMIN_TOKENS="short-one",
        HTTP_PORT="0",
    )
    assert found == [
        f"MONGO_URL: cannot read MONGO_URL_FILE ({missing}): No such file or directory",
        f"API_READ_TOKENS: API_READ_TOKENS_FILE ({tmp_path / 'secret'}) is empty",
        "API_ADMIN_TOKENS: token 1 has fewer than 16 characters",
        "HTTP_PORT: must be > 0",
    ]


def test_a_short_token_is_named_by_position_not_content(monkeypatch: pytest.MonkeyPatch) -> None:
    found = errors(monkeypatch, API_READ_TOKENS=f"{READ},tooshort")
    assert found == ["API_READ_TOKENS: token 2 has fewer than 16 characters"]


def test_no_token_means_auth_off_and_empty_items_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not ProcessorSettings().auth_enabled
    assert Tokens.from_settings(ProcessorSettings()) is None
    monkeypatch.setenv("API_READ_TOKENS", " , ,")
    assert ProcessorSettings().api_read_tokens is None


def test_admin_implies_read_and_unknown_tokens_have_no_scope() -> None:
    tokens = Tokens([READ], [ADMIN])
    assert tokens.scope_of(READ) == "read"
    assert tokens.scope_of(ADMIN) == "admin"
    assert tokens.scope_of(READ[:-1]) is None
    assert tokens.scope_of(READ + "x") is None
    assert tokens.scope_of("") is None
    # A token in both lists has the wider scope, whichever list comes first.
    assert Tokens([ADMIN], [ADMIN]).scope_of(ADMIN) == "admin"
