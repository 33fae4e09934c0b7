"""The settings idiom both services share: one base class, shared field types, one error report.

    >>> class MySettings(ServiceSettings):
    ...     kafka_topic: KafkaTopic = Field("tokens", description="Topic to read.")
    >>> try:
    ...     settings = MySettings()
    ... except ValidationError as exc:
    ...     sys.stderr.write(report("my-service", problems(exc, MySettings)))
    ...     sys.exit(2)

A secret field (``Secret``, ``SecretList``) is also read from ``<NAME>_FILE``, the way Docker and
Kubernetes mount secrets: ``MONGO_URL_FILE=/run/secrets/mongo_url`` reads the file's content
(trailing newline stripped) into ``MONGO_URL``. Setting both, or naming a file that cannot be
read, is a settings error like any other, reported without the value.

Constraints are declared on the fields (``Field(gt=0)``, a pattern, a ``Literal``), so they
show in the class and are all checked in one pass: :func:`problems` then turns every failure
into one ``ENV_NAME: reason`` line, whatever the service.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args, get_origin

from pydantic import BeforeValidator, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = [
    "KafkaBootstrap",
    "KafkaTopic",
    "LogFormat",
    "LogLevel",
    "Secret",
    "SecretList",
    "ServiceSettings",
    "env_name",
    "explained",
    "problems",
    "reason",
    "report",
]


FILE_SUFFIX: Final = "_FILE"


@dataclass(frozen=True, slots=True)
class _FileProblem:
    """Why ``<NAME>_FILE`` gave no value; the field's validator turns it into its error."""

    message: str


def _no_file_problem(value: Any) -> Any:
    if isinstance(value, _FileProblem):
        raise ValueError(value.message)
    return value


# Both the marker of a secret field (the file source looks for this object in the field's
# metadata) and the validator that reports a problem with its file.
_FROM_FILE: Final = BeforeValidator(_no_file_problem)


def _split_secrets(value: Any) -> Any:
    # Comma-separated, spaces around the commas allowed; empty items (a trailing comma) dropped.
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# A password or a connection string: hidden in repr, logs and errors, readable from <NAME>_FILE.
# (Annotated before-validators run last-declared first, so _FROM_FILE sees the raw value.)
Secret = Annotated[SecretStr, _FROM_FILE]
# Comma-separated secrets (e.g. API tokens), each hidden; readable from <NAME>_FILE as well.
SecretList = Annotated[list[SecretStr], BeforeValidator(_split_secrets), _FROM_FILE]


def _marked(tp: Any) -> bool:
    # Annotated[..., _FROM_FILE] anywhere in the type: `Secret`, `SecretList | None`...
    if get_origin(tp) is Annotated:
        return any(item is _FROM_FILE for item in get_args(tp)[1:]) or _marked(get_args(tp)[0])
    return any(_marked(arg) for arg in get_args(tp))


def _is_secret(field: FieldInfo) -> bool:
    return any(item is _FROM_FILE for item in field.metadata) or _marked(field.annotation)


class _SecretFiles(PydanticBaseSettingsSource):
    """``<NAME>_FILE`` for every secret field: the file's content, or why there is none."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """``(content of <NAME>_FILE or a problem, env name, False)``; None when unset."""
        var = env_name(self.settings_cls, field_name)
        environ = {k.upper(): v for k, v in os.environ.items() if v.strip()}
        path = environ.get(var + FILE_SUFFIX)
        if not _is_secret(field) or path is None:
            return None, var, False
        return self._read(var, path.strip(), both=var in environ), var, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, _var, _complex = self.get_field_value(field, name)
            if value is not None:
                found[name] = value
        return found

    @staticmethod
    def _read(var: str, path: str, *, both: bool) -> str | _FileProblem:
        file_var = var + FILE_SUFFIX
        if both:
            return _FileProblem(f"both {var} and {file_var} are set; set only one")
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            # The path is the operator's, not a secret; the content is never shown.
            return _FileProblem(f"cannot read {file_var} ({path}): {exc.strerror or exc}")
        except UnicodeDecodeError:
            return _FileProblem(f"{file_var} ({path}) is not UTF-8 text")
        value = text.rstrip("\r\n")
        if not value.strip():
            return _FileProblem(f"{file_var} ({path}) is empty")
        return value


class ServiceSettings(BaseSettings):
    """Base of every service's settings: the one configuration convention of the project."""

    model_config = SettingsConfigDict(
        # Names carry no prefix and no case: KAFKA_BOOTSTRAP means the same to every service
        # and every compose file, and `kafka_bootstrap=` works in tests.
        case_sensitive=False,
        # Compose passes optional values as `${VAR:-}`: an empty variable means "the default",
        # not "an empty string" (which would be an invalid topic, price map, host...).
        env_ignore_empty=True,
        # A misspelt keyword (a flag override, a test's `ProcessorSettings(gpu_price=...)`) is an
        # error instead of a silently ignored value; the environment is unaffected (only the
        # declared names are read from it).
        extra="forbid",
        # Read once at start and shared by threads (consume loop, HTTP API): a setting that
        # changed at run time would disagree with the clients already built from it.
        frozen=True,
        # Structured values (GPU_PRICES, PRODUCER_MODELS) are parsed by their fields'
        # validators: pydantic-settings' own JSON decoding would stop at the first bad
        # variable, before validation, so the others would go unreported.
        enable_decoding=False,
        # Stray spaces and trailing newlines (values pasted or read from secret files).
        str_strip_whitespace=True,
        # No setting means anything with NaN or infinity (a window, a price, a timeout).
        allow_inf_nan=False,
        # A ValidationError printed anywhere (a traceback, a log) never shows the input, which
        # may be a MONGO_URL with its password.
        hide_input_in_errors=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # <NAME>_FILE before <NAME>: when both are set, the file source's "set only one" wins
        # over the plain value, so the conflict is reported instead of silently resolved.
        return (
            init_settings,
            _SecretFiles(settings_cls),
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )


_PATTERN_MEANINGS: dict[str, str] = {}


def explained(regex: str, meaning: str) -> str:
    """A ``Field(pattern=...)`` whose failure reads ``meaning`` instead of the regex.

    host: str = Field(pattern=explained(r"^\\S+$", "must have no whitespace"))
    """
    _PATTERN_MEANINGS[regex] = meaning
    return regex


def _upper(value: Any) -> Any:
    # A Literal is not a str field: str_strip_whitespace does not reach it.
    return value.strip().upper() if isinstance(value, str) else value


# Comma-separated host:port entries, spaces around the commas allowed (librdkafka trims them).
KafkaBootstrap = Annotated[
    str,
    Field(
        pattern=explained(r"^[^,\s]+(\s*,\s*[^,\s]+)*$", "must be host:port[,host:port...]"),
    ),
]
# Kafka's legal topic names (kafka.common.internals.Topic): at most 249 of [a-zA-Z0-9._-], and
# not "." or ".." (a name of dots only needs three or more).
KafkaTopic = Annotated[
    str,
    Field(
        max_length=249,
        pattern=explained(
            r"^([a-zA-Z0-9._-]*[a-zA-Z0-9_-][a-zA-Z0-9._-]*|\.{3,})$",
            "must be 1-249 characters of a-z A-Z 0-9 . _ - (not . or ..)",
        ),
    ),
]
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)]
# LOG_FORMAT: `text` for people at a terminal, `json` (one object per line) for log shippers.
LogFormat = Annotated[Literal["text", "json"], BeforeValidator(str.lower)]


def env_name(cls: type[BaseSettings], name: str) -> str:
    """The environment variable of a field (its alias, else its name), as users write it."""
    field = cls.model_fields.get(name)
    if field is None:  # already an alias: errors are located by alias
        return name.upper()
    prefix = str(cls.model_config.get("env_prefix", "") or "")
    alias = field.validation_alias if isinstance(field.validation_alias, str) else None
    return (alias or field.alias or f"{prefix}{name}").upper()


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# Pydantic's bound errors, said the way the docs table says them: error type -> (symbol, ctx key).
_BOUNDS: Final = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}


def reason(error: Mapping[str, Any]) -> str:
    """One pydantic error's reason in the docs' words: ``must be >= 0``, ``no such file``."""
    kind = str(error.get("type", ""))
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    msg = str(error.get("msg", "invalid value"))
    if kind in _BOUNDS:
        symbol, key = _BOUNDS[kind]
        return f"must be {symbol} {_number(ctx.get(key))}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return _PATTERN_MEANINGS.get(pattern, f"must match {pattern}")
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else msg
    if kind == "path_not_file":
        return "no such file"
    if kind == "extra_forbidden":
        return "unknown setting"
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg.replace("Input should be", "must be").replace("String should have", "must have")


def _shown(key: object, limit: int = 40) -> str:
    text = repr(key)
    return text if len(text) <= limit else f"{text[: limit - 4]}...{text[-1]}"


def problems(
    exc: ValidationError, cls: type[BaseSettings], flags: Mapping[str, str] | None = None
) -> list[str]:
    """Every failure of ``exc`` as ``ENV_NAME: reason``, in the order of the class's fields.

    ``flags`` maps an env name to the command-line flag that set it, so an error caused by a
    flag says so: ``PRODUCER_RATE (--rate): must be >= 0``. A failure inside a structured
    value names its key: ``GPU_PRICES['NVIDIA L4']: must be >= 0``.
    """
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        if not loc:  # a model-level check names its settings itself
            lines.append(reason(error))
            continue
        name = env_name(cls, loc[0])
        where = f"{name} ({flags[name]})" if flags and name in flags else name
        inner = list(error["loc"][1:])
        if inner[-1:] == ["[key]"]:  # the key itself is bad, not its value
            where += f" key {_shown(inner[-2])}" if len(inner) > 1 else " key"
        else:
            where += "".join(f"[{_shown(part)}]" for part in inner)
        lines.append(f"{where}: {reason(error)}")
    return lines


def report(service: str, lines: Sequence[str]) -> str:
    """The message a service prints before exiting with code 2: every problem, one a line."""
    count = f"{len(lines)} invalid setting{'s' if len(lines) != 1 else ''}"
    return f"{service}: {count}:\n" + "".join(f"  {line}\n" for line in lines)
