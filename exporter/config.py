"""The YAML configuration: strict pydantic models, credential resolution, one error per problem.

The pydantic models are the schema. ``load_config`` builds the reporting around them: every
problem of a file in one run, each with its YAML line, in our words (``did you mean`` for misspelt
keys, derived from the models' fields, so a field added to a model gets both for free). Checks
that span fields (``account_problems``) also run on the raw YAML, so a field error elsewhere does
not hide them. Durations take seconds or Prometheus' syntax (``90``, ``30s``, ``1h30m``, ``1d``).
"""

from __future__ import annotations

import contextlib
import os
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter.errors import ConfigError, ConfigProblem
from exporter.regions import REGIONS, suggest

if TYPE_CHECKING:
    from exporter.credentials.chain import Resolved


@dataclass(frozen=True, slots=True)
class CollectorDef:
    """A collector: which provider it belongs to, its default interval, what it builds on."""

    provider: Literal["aliyun", "tencent"]
    interval: float
    depends_on: str | None
    help: str


COLLECTORS: dict[str, CollectorDef] = {
    "sas_images": CollectorDef("aliyun", 300, None, "Sas DescribeImageInstances: image inventory"),
    "sas_baseline": CollectorDef(
        "aliyun", 900, "sas_images", "Sas DescribeImageBaselineCheckResult per image"
    ),
    "sas_vulnerabilities": CollectorDef(
        "aliyun", 900, "sas_images", "Sas DescribeImageVulList per image, by Necessity"
    ),
    "sas_malicious": CollectorDef(
        "aliyun", 900, "sas_images", "Sas DescribeAffectedMaliciousFileImages"
    ),
    "sas_image_risk": CollectorDef("aliyun", 900, None, "Sas ListImageRisk: images in use"),
    "tcss_images": CollectorDef("tencent", 300, None, "TCSS DescribeAssetImageList: inventory"),
    "tcss_image_detail": CollectorDef(
        "tencent", 300, "tcss_images", "TCSS DescribeAssetImageDetail per image"
    ),
}

MIN_INTERVAL = 1.0
"""Floor of every collector's refresh interval, in seconds (README, "Configuration reference"):
it catches unit slips (``1ms``, ``0.5``); production intervals are minutes (the defaults)."""
MIN_TIMEOUT = 1.0
"""Floor of ``refresh.timeout``, in seconds."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_PROMETHEUS_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_PROMETHEUS_UNITS = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)


def parse_duration(value: object) -> object:
    """Seconds as a number, or a string: ``90``, ``1.5m`` or Prometheus' ``1h30m``, ``1d``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration: use e.g. 30s, 5m, 1h30m, 1d")
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
        match = _PROMETHEUS_DURATION.match(value.strip())
        if match and any(match.groups()):
            return sum(
                int(n) * unit
                for n, unit in zip(match.groups(), _PROMETHEUS_UNITS, strict=True)
                if n
            )
        raise ValueError(f"{value!r} is not a duration: use e.g. 30s, 5m, 1h30m, 1d")
    return value


def format_duration(seconds: float) -> str:
    """``5400`` as ``1h30m``, ``0.001`` as ``1ms``: Prometheus' duration syntax."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    out, rest = "", seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, rest = divmod(rest, size)
        if count:
            out += f"{count:.0f}{unit}"
    return out + (f"{rest:g}s" if rest or not out else "")


def at_least(minimum: float, what: str) -> Callable[[float], float]:
    """A validator refusing durations under ``minimum`` seconds, naming the documented floor."""

    def check(value: float) -> float:
        if value < minimum:
            raise ValueError(
                f"{format_duration(value)} is under the floor of {format_duration(minimum)} "
                f"for {what}"
            )
        return value

    return check


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Interval = Annotated[
    float, BeforeValidator(parse_duration), AfterValidator(at_least(MIN_INTERVAL, "intervals"))
]
Timeout = Annotated[
    float, BeforeValidator(parse_duration), AfterValidator(at_least(MIN_TIMEOUT, "timeouts"))
]

_PLACEHOLDER = re.compile(
    r"^(changeme|change[-_]me|x+|secret|password|todo|your.*|<.*>|\$\{.*\}|.*example.*)$", re.I
)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def only_for(*providers: str) -> dict[str, Any]:
    """``Field(json_schema_extra=only_for("tencent"))``: the key applies to these providers only;
    on an account of another provider it is a config error (``account_problems``)."""
    return {"providers": list(providers)}


class CollectorSettings(StrictModel):
    enabled: bool = True
    interval: Interval | None = None


ALIYUN_TYPES = (
    "access_key",
    "sts_token",
    "ram_role_arn",
    "oidc_role_arn",
    "ecs_ram_role",
    "credentials_uri",
    "cli_profile",
)
TENCENT_TYPES = ("secret", "sts_token", "assume_role", "oidc_role", "cvm_role", "profile")

_ALIYUN_KEY = ("access_key_id", "access_key_secret")
_ALIYUN_TOKEN = ("security_token",)
_TENCENT_KEY = ("secret_id", "secret_key")
_TENCENT_TOKEN = ("session_token",)
_ROLE = ("role_arn", "role_session_name", "duration_seconds", "policy")

# Which credential fields each type takes (besides ``type``); a value of a ``*_file`` pair
# counts as its field. Anything else set is an error: every accepted setting is enforced.
CREDENTIAL_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("aliyun", "access_key"): _ALIYUN_KEY,
    ("aliyun", "sts_token"): _ALIYUN_KEY + _ALIYUN_TOKEN,
    ("aliyun", "ram_role_arn"): _ALIYUN_KEY
    + _ALIYUN_TOKEN
    + _ROLE
    + ("external_id", "sts_region", "vpc_endpoint_enabled"),
    ("aliyun", "oidc_role_arn"): (
        *_ROLE,
        "oidc_provider_arn",
        "oidc_token_file",
        "sts_region",
        "vpc_endpoint_enabled",
    ),
    ("aliyun", "ecs_ram_role"): ("role_name", "imdsv1_disabled"),
    ("aliyun", "credentials_uri"): ("credentials_uri",),
    ("aliyun", "cli_profile"): ("profile", "profile_file"),
    ("aliyun", ""): _ALIYUN_KEY + _ALIYUN_TOKEN,
    ("tencent", "secret"): _TENCENT_KEY,
    ("tencent", "sts_token"): _TENCENT_KEY + _TENCENT_TOKEN,
    ("tencent", "assume_role"): _TENCENT_KEY + _TENCENT_TOKEN + _ROLE + ("external_id", "region"),
    ("tencent", "oidc_role"): (
        "role_arn",
        "role_session_name",
        "duration_seconds",
        "provider_id",
        "oidc_token_file",
        "region",
    ),
    ("tencent", "cvm_role"): ("role_name",),
    ("tencent", "profile"): ("profile", "profile_file"),
    ("tencent", ""): _TENCENT_KEY + _TENCENT_TOKEN,
}


class Credentials(StrictModel):
    """Per-account credentials: a ``type`` (else the vendor's default chain) and its fields.

    Secrets may instead come from a file (``*_file``), re-read when it changes.
    """

    type: Literal[ALIYUN_TYPES + TENCENT_TYPES] | None = None  # type: ignore[valid-type]
    access_key_id: str | None = None
    access_key_id_file: Path | None = None
    access_key_secret: SecretStr | None = None
    access_key_secret_file: Path | None = None
    security_token: SecretStr | None = None
    security_token_file: Path | None = None
    secret_id: str | None = None
    secret_id_file: Path | None = None
    secret_key: SecretStr | None = None
    secret_key_file: Path | None = None
    session_token: SecretStr | None = None
    session_token_file: Path | None = None
    role_arn: str | None = Field(default=None, min_length=1)
    role_session_name: str | None = Field(default=None, pattern=r"^[\w.@=,-]{2,64}$")
    duration_seconds: int | None = Field(default=None, ge=900, le=43200)
    policy: str | None = None
    external_id: str | None = None
    oidc_provider_arn: str | None = Field(default=None, min_length=1)
    oidc_token_file: Path | None = None
    provider_id: str | None = Field(default=None, min_length=1)
    region: str | None = Field(default=None, pattern=r"^[a-z]{2,}(-[a-z0-9]+)+$")
    sts_region: str | None = Field(default=None, pattern=r"^[a-z]{2,}(-[a-z0-9]+)+$")
    vpc_endpoint_enabled: bool | None = None
    role_name: str | None = Field(default=None, min_length=1)
    imdsv1_disabled: bool | None = None
    credentials_uri: str | None = Field(default=None, pattern=r"^https?://")
    profile: str | None = Field(default=None, min_length=1)
    profile_file: Path | None = None

    def set_fields(self) -> list[str]:
        """The fields given, ``*_file`` folded into their value field."""
        names = self.model_dump(exclude_none=True, exclude={"type"})
        fields = type(self).model_fields
        return sorted({n[:-5] if n.endswith("_file") and n[:-5] in fields else n for n in names})


def _regexes(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"not a regular expression: {pattern!r} ({err})") from None
    return patterns


Regexes = Annotated[list[str], AfterValidator(_regexes)]

DEFAULT_MAX_IMAGES = 50_000


class ImageFilters(StrictModel):
    """Which listed images an account exports (exporter/filters.py, README "Filters")."""

    repo_include: Regexes = []
    repo_exclude: Regexes = []
    tag_include: Regexes = []
    tag_exclude: Regexes = []
    newest_tags: int | None = Field(default=None, ge=1)
    max_images: int = Field(default=DEFAULT_MAX_IMAGES, ge=1, le=1_000_000)


class Account(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    provider: Literal["aliyun", "tencent"]
    regions: list[str] = Field(min_length=1)
    allow_unknown_regions: bool = False  # escape hatch for regions exporter/regions.py lacks
    endpoint: str | dict[str, str] | None = None  # one for all regions, or per region
    site: Literal["china", "international"] = Field(
        default="china", json_schema_extra=only_for("tencent")
    )
    credentials: Credentials = Credentials()
    sts_endpoint: str | None = Field(default=None, pattern=r"^(https?://)?[^\s/]+(:\d+)?/?$")
    metadata_endpoint: str | None = Field(default=None, pattern=r"^(https?://)?[^\s/]+(:\d+)?/?$")
    collectors: dict[str, CollectorSettings] = {}
    rate_limit: float | None = Field(default=None, gt=0, description="requests/s per action")
    images: ImageFilters = ImageFilters()

    @field_validator("regions")
    @classmethod
    def _regions(cls, regions: list[str]) -> list[str]:
        for region in regions:
            if not REGION_ID.fullmatch(region):
                raise ValueError(f"not a region id: {region!r}")
        if len(set(regions)) != len(regions):
            raise ValueError("regions must be unique")
        return regions

    def endpoint_for(self, region: str) -> str | None:
        """The endpoint override of ``region``, if any."""
        if isinstance(self.endpoint, dict):
            return self.endpoint.get(region)
        return self.endpoint

    @field_validator("collectors")
    @classmethod
    def _known_collectors(cls, value: dict[str, CollectorSettings]) -> dict[str, CollectorSettings]:
        unknown = sorted(set(value) - set(COLLECTORS))
        if unknown:
            raise ValueError("\n".join(unknown_collector(name) for name in unknown))
        return value

    @model_validator(mode="after")
    def _provider_rules(self) -> Account:
        problems = credential_problems(self.provider, self.credentials)
        fields = {name: getattr(self, name) for name in self.model_fields_set}
        problems += [
            message for _, message in account_problems({**fields, "provider": self.provider})
        ]
        if problems:
            raise ValueError("\n".join(problems))
        return self


Location = tuple[int | str, ...]


def credential_problems(provider: str, creds: Credentials) -> list[str]:
    """What is wrong with an account's ``credentials`` for its provider (type and fields)."""
    kind = creds.type or ""
    types = ALIYUN_TYPES if provider == "aliyun" else TENCENT_TYPES
    if kind and kind not in types:
        return [
            f"credentials type {kind!r} does not apply to provider {provider} "
            f"(types: {', '.join(types)})"
        ]
    allowed = CREDENTIAL_FIELDS[(provider, kind)]
    wrong = [f for f in creds.set_fields() if f not in allowed]
    if wrong:
        what = f"type {kind}" if kind else f"provider {provider} without a type"
        return [f"credentials {wrong} do not apply to {what}"]
    return []


REGION_ID = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+")


def unknown_collector(name: str) -> str:
    hint = suggest(name, COLLECTORS) or f" (known: {', '.join(COLLECTORS)})"
    return f"unknown collector {name!r}{hint}"


def account_problems(account: Mapping[str, Any]) -> list[tuple[Location, str]]:
    """The checks that span an account's fields, as (location in the account, message).

    Runs on the validated model and on the raw YAML mapping (so a field error elsewhere in the
    account does not hide these); tolerant of wrong types, which the field validation reports.
    """
    problems: list[tuple[Location, str]] = []
    provider = account.get("provider")
    if provider not in REGIONS:
        return problems
    for name, field in Account.model_fields.items():
        extra = field.json_schema_extra
        providers = extra.get("providers") if isinstance(extra, dict) else None
        if isinstance(providers, list) and name in account and provider not in providers:
            only = " and ".join(str(p) for p in providers)
            problems.append(((name,), f"{name!r} applies to provider {only} only, not {provider}"))
    regions = account.get("regions")
    regions = [r for r in regions if isinstance(r, str)] if isinstance(regions, list) else []
    if account.get("allow_unknown_regions") is not True:
        for index, region in enumerate(regions):
            if REGION_ID.fullmatch(region) and region not in REGIONS[provider]:
                problems.append(
                    (
                        ("regions", index),
                        f"unknown {provider} region {region!r}{suggest(region, REGIONS[provider])}"
                        "; for a region newer than this release set allow_unknown_regions: true",
                    )
                )
    collectors = account.get("collectors")
    if isinstance(collectors, Mapping):
        for name in collectors:
            if name not in COLLECTORS:
                problems.append((("collectors", name), unknown_collector(str(name))))
            elif COLLECTORS[name].provider != provider:
                problems.append(
                    (("collectors", name), f"collector {name} does not apply to {provider}")
                )
    endpoint = account.get("endpoint")
    if isinstance(endpoint, Mapping):
        for region in sorted(set(endpoint) - set(regions)):
            problems.append(
                (("endpoint", region), f"endpoint given for region {region!r}, not in regions")
            )
    if provider == "aliyun" and endpoint is None:
        from exporter.clouds.aliyun.endpoints import sas_endpoint

        hosts: dict[str, str] = {}
        for index, region in enumerate(regions):
            host = sas_endpoint(region)
            if host in hosts:
                problems.append(
                    (
                        ("regions", index),
                        f"regions {hosts[host]} and {region} are both served by {host}, which "
                        "answers for the whole site: list one region per site",
                    )
                )
            hosts.setdefault(host, region)
    return problems


class RefreshSettings(StrictModel):
    timeout: Timeout = 600.0
    concurrency: int = Field(default=8, ge=1, le=64)
    max_attempts: int = Field(default=4, ge=1, le=10)
    progress_interval: Duration = 10.0  # a per-image pass publishes what it has this often
    stage_floor: Duration = 300.0  # a TCSS detail is re-fetched on a stage change after this
    estimated_images: int | None = Field(default=None, ge=0)  # per source, for the cost log
    max_age: Duration | None = Field(
        default=None,
        description="drop a failing source's last good data once it is older than this",
    )


_MiB = 1024 * 1024
ByteSize = Annotated[int, Field(ge=1024, le=1024 * _MiB)]


class HttpSettings(StrictModel):
    """Bounds of every exchange with a cloud API (exporter/clouds/http.py ``HttpLimits``)."""

    max_response_bytes: ByteSize = 16 * _MiB
    max_response_bytes_per_action: dict[str, ByteSize] = {}
    max_buffered_bytes: ByteSize = 64 * _MiB
    request_deadline: Duration = 60.0
    retry_deadline: Duration = 180.0
    connect_timeout: Duration = 5.0
    read_timeout: Duration = 15.0
    max_connections: int = Field(default=8, ge=1, le=256)

    @field_validator("max_response_bytes_per_action")
    @classmethod
    def _known_actions(cls, value: dict[str, int]) -> dict[str, int]:
        from exporter.clouds.aliyun.api import PAGINATION as SAS
        from exporter.clouds.tencent.api import ACTIONS as TCSS

        known = set(SAS) | set(TCSS)
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown action(s) {unknown}; known: {sorted(known)}")
        return value

    @model_validator(mode="after")
    def _deadlines(self) -> HttpSettings:
        if self.retry_deadline < self.request_deadline:
            raise ValueError("retry_deadline must be at least request_deadline")
        biggest = max([self.max_response_bytes, *self.max_response_bytes_per_action.values()])
        if self.max_buffered_bytes < biggest:
            raise ValueError(
                "max_buffered_bytes must hold at least one answer of the largest size cap "
                f"({biggest})"
            )
        return self


class Config(StrictModel):
    accounts: list[Account] = Field(min_length=1)
    collectors: dict[str, CollectorSettings] = {}
    refresh: RefreshSettings = RefreshSettings()
    http: HttpSettings = HttpSettings()

    @field_validator("collectors")
    @classmethod
    def _known_collectors(cls, value: dict[str, CollectorSettings]) -> dict[str, CollectorSettings]:
        return Account._known_collectors(value)

    @field_validator("accounts")
    @classmethod
    def _unique_names(cls, accounts: list[Account]) -> list[Account]:
        names = [(a.provider, a.name) for a in accounts]
        dupes = sorted({f"{p}/{n}" for p, n in names if names.count((p, n)) > 1})
        if dupes:
            raise ValueError(f"account names must be unique per provider: {dupes}")
        return accounts

    @model_validator(mode="after")
    def _max_age_covers_intervals(self) -> Config:
        max_age = self.refresh.max_age
        if max_age is None:
            return self
        for account in self.accounts:
            for name in COLLECTORS:
                enabled, interval = self.collector(account, name)
                if enabled and COLLECTORS[name].provider == account.provider and interval > max_age:
                    raise ValueError(
                        f"refresh.max_age ({max_age:g}s) is shorter than the interval of "
                        f"{name} ({interval:g}s): its data would expire between refreshes"
                    )
        return self

    def collector(self, account: Account, name: str) -> tuple[bool, float]:
        """Whether ``name`` runs for ``account``, and its interval (account > global > default)."""
        default = COLLECTORS[name]
        enabled, interval = True, default.interval
        for settings in (self.collectors.get(name), account.collectors.get(name)):
            if settings is not None:
                enabled = settings.enabled
                interval = settings.interval or interval
        return enabled, interval


@dataclass(frozen=True, slots=True)
class ResolvedCredentials:
    """Credentials ready to sign with; ``repr`` never shows a secret."""

    key_id: str
    secret: SecretStr
    token: SecretStr | None
    origin: str  # "config", "file" or "env": shown on the landing page, never the values


_ENV = {
    "aliyun": (
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_SECURITY_TOKEN",
    ),
    "tencent": ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY", "TENCENTCLOUD_SESSION_TOKEN"),
}
_FIELDS = {
    "aliyun": ("access_key_id", "access_key_secret", "security_token"),
    "tencent": ("secret_id", "secret_key", "session_token"),
}


def _value(creds: Credentials, field: str) -> tuple[str | None, str]:
    direct = getattr(creds, field)
    path: Path | None = getattr(creds, f"{field}_file")
    if direct is not None and path is not None:
        raise ValueError(f"set either {field} or {field}_file, not both")
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").strip(), "file"
        except OSError as err:
            raise ValueError(f"{field}_file: cannot read {path}: {err.strerror}") from None
    if isinstance(direct, SecretStr):
        return direct.get_secret_value(), "config"
    return direct, "config"


def resolve_credentials(
    account: Account, env: Mapping[str, str], *, allow_placeholders: bool = False
) -> ResolvedCredentials:
    """Credentials from the account's fields or files, else the vendor's environment variables."""
    id_field, secret_field, token_field = _FIELDS[account.provider]
    id_env, secret_env, token_env = _ENV[account.provider]
    key_id, origin = _value(account.credentials, id_field)
    secret, _ = _value(account.credentials, secret_field)
    token, _ = _value(account.credentials, token_field)
    if key_id is None and secret is None:
        key_id, secret, origin = env.get(id_env) or None, env.get(secret_env) or None, "env"
        token = token or env.get(token_env) or None
    if not key_id and not secret:
        raise ValueError(
            f"no credentials: set {id_env} and {secret_env}, or credentials.{id_field} and "
            f"credentials.{secret_field} (or their *_file variants)"
        )
    if not key_id or not secret:
        have, lack = (id_field, secret_field) if key_id else (secret_field, id_field)
        if origin == "env":
            have, lack = (id_env, secret_env) if key_id else (secret_env, id_env)
            raise ValueError(f"{have} is set but {lack} is not")
        raise ValueError(
            f"credentials.{have} is set but credentials.{lack} (or {lack}_file) is not"
        )
    if not allow_placeholders and (_PLACEHOLDER.match(secret) or _PLACEHOLDER.match(key_id)):
        raise ValueError("credentials look like a placeholder; set the real key")
    return ResolvedCredentials(
        key_id=key_id,
        secret=SecretStr(secret),
        token=SecretStr(token) if token else None,
        origin=origin,
    )


def _location(loc: Location, data: Any) -> str:
    """Turn a pydantic error location into ``accounts[0] (prod).regions[1]``."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            try:
                node = node[part]
                name = node.get("name") if isinstance(node, dict) else None
                if name:
                    out += f" ({name})"
            except (IndexError, KeyError, TypeError):
                node = None
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


class _LineLoader(yaml.SafeLoader):
    """A safe loader that also records where each key and item is and finds duplicate keys."""


def _walk(
    node: yaml.Node, path: Location, lines: dict[Location, int]
) -> Iterator[tuple[Location, str, int]]:
    """Record the 1-based line of every mapping key and sequence item; yield duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[object, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                yield (
                    (*path, key),
                    f"duplicate key {key!r} (first at line {seen[key]}): YAML keeps only the last",
                    line,
                )
            seen.setdefault(key, line)
            lines.setdefault((*path, key), line)
            yield from _walk(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.setdefault((*path, index), item.start_mark.line + 1)
            yield from _walk(item, (*path, index), lines)


def _line(loc: Location, lines: Mapping[Location, int]) -> int | None:
    """The line of ``loc``, or of its nearest ancestor the file names."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _unwrap(annotation: Any) -> list[Any]:
    """The types an annotation may hold (Optional, unions and Annotated unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _model_at(loc: Location) -> type[BaseModel] | None:
    """The config model that the mapping at ``loc`` is validated against, if any."""
    current: list[Any] = [Config]
    for part in loc:
        following: list[Any] = []
        for candidate in current:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                field = candidate.model_fields.get(str(part))
                if field is not None:
                    following += _unwrap(field.annotation)
            elif typing.get_origin(candidate) in (list, dict):
                following += _unwrap(typing.get_args(candidate)[-1])
        current = following
    for candidate in current:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _strip_union_tags(loc: Location, data: Any, kind: str) -> Location:
    """Drop the parts pydantic adds to name a union member (``str``, ``dict[str,str]``)."""
    out: list[int | str] = []
    node = data
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(part, str) and isinstance(node, dict) and part not in node:
            if not (last and kind == "missing"):
                continue
        out.append(part)
        try:
            node = node[part]
        except (IndexError, KeyError, TypeError):
            node = None
    return tuple(out)


_MESSAGES: dict[str, str] = {
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
}


def _message(error: Mapping[str, Any], loc: Location) -> str:
    """A pydantic error in our words."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        key = str(loc[-1])
        model = _model_at(loc[:-1])
        known = list(model.model_fields) if model else []
        hint = suggest(key, known) or (f"; valid keys: {', '.join(known)}" if known else "")
        return f"unknown key {key!r}{hint}"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}" if loc else "missing"
    if kind in ("literal_error", "enum"):
        value = error.get("input")
        choices = [
            c.strip(" '") for c in str(ctx.get("expected", "")).replace(" or ", ",").split(",")
        ]
        hint = suggest(value, choices) if isinstance(value, str) else ""
        return f"must be one of {ctx.get('expected')}, not {value!r}{hint}"
    if kind == "too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else error["msg"]
    if kind == "too_long" or kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters long"
    if kind == "string_pattern_mismatch":
        return f"{error.get('input')!r} must match {ctx.get('pattern')}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {
            "greater_than": "greater than",
            "greater_than_equal": "at least",
            "less_than": "less than",
            "less_than_equal": "at most",
        }
        bound = next(iter(ctx.values()), "")
        return f"must be {words[kind]} {bound}, not {error.get('input')!r}"
    if kind in _MESSAGES:
        return f"{_MESSAGES[kind]}, not {error.get('input')!r}"
    return str(error["msg"]).removeprefix("Value error, ")


def config_problems(data: Any, lines: Mapping[Location, int] | None = None) -> list[ConfigProblem]:
    """Every problem of parsed YAML, with lines when ``lines`` has them; empty when valid."""
    lines = lines or {}
    if not isinstance(data, dict):
        return [ConfigProblem("", "the config file must be a YAML mapping", line=1)]

    def problem(loc: Location, message: str) -> ConfigProblem:
        return ConfigProblem(_location(loc, data), message, line=_line(loc, lines))

    found: list[ConfigProblem] = []
    raw_messages: set[str] = set()
    if isinstance(data.get("collectors"), dict):
        for name in data["collectors"]:
            if name not in COLLECTORS:
                raw_messages.add(unknown_collector(str(name)))
                found.append(problem(("collectors", name), unknown_collector(str(name))))
    accounts = data.get("accounts")
    if isinstance(accounts, list):
        names = [(a.get("provider"), a.get("name")) for a in accounts if isinstance(a, dict)]
        for index, account in enumerate(accounts):
            if not isinstance(account, dict):
                continue
            ident = (account.get("provider"), account.get("name"))
            if ident[1] is not None and names.count(ident) > 1 and names.index(ident) != index:
                message = (
                    f"account names must be unique per provider: {ident[0]}/{ident[1]} is listed "
                    "twice"
                )
                found.append(problem(("accounts", index, "name"), message))
            for loc, message in account_problems(account):
                raw_messages.add(message)
                found.append(problem(("accounts", index, *loc), message))
    try:
        Config.model_validate(data)
    except ValidationError as err:
        for error in err.errors(include_url=False):
            loc = _strip_union_tags(tuple(error["loc"]), data, error["type"])
            for line in _message(error, loc).splitlines():
                if line not in raw_messages and "names must be unique per provider" not in line:
                    found.append(problem(loc, line))
    unique: dict[tuple[str, str], ConfigProblem] = {}
    for item in found:
        unique.setdefault((item.location, item.error), item)
    return sorted(unique.values(), key=lambda p: (p.line or 0, p.location))


def parse_config(data: Any) -> Config:
    """Validate parsed YAML; every problem becomes one ``ConfigProblem``."""
    problems = config_problems(data)
    if problems:
        raise ConfigError(problems)
    return Config.model_validate(data)


def read_yaml(path: Path) -> tuple[Any, dict[Location, int], list[ConfigProblem]]:
    """The parsed file, the line of every key and item, and its duplicate keys."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([ConfigProblem(str(path), f"cannot read: {err.strerror}")]) from None
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError([ConfigProblem(str(path), "the config file is empty", line=1)])
        lines: dict[Location, int] = {}
        duplicates = list(_walk(node, (), lines))
        data = loader.construct_document(node)
        problems = [ConfigProblem(_location(loc, data), msg, line=n) for loc, msg, n in duplicates]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or "invalid YAML"
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            [ConfigProblem(str(path), f"invalid YAML: {problem}", line=line)]
        ) from None
    finally:
        loader.dispose()
    return data, lines, problems


def load_config(path: Path) -> Config:
    """Read and validate a YAML config file; every problem, with its line, in one ConfigError."""
    config, _ = check_file(path, resolve=False)
    return config


@dataclass(frozen=True, slots=True)
class FileCheck:
    """What ``inspect_file`` found: the config if the file itself is valid, each account's
    resolved credential provider, and every problem."""

    config: Config | None
    credentials: dict[AccountId, Resolved]
    problems: list[ConfigProblem]


def check_file(
    path: Path,
    env: Mapping[str, str] | None = None,
    *,
    resolve: bool = True,
    allow_placeholders: bool = False,
) -> tuple[Config, dict[AccountId, Resolved]]:
    """Load, validate and (with ``resolve``) resolve every account's credential provider.

    Raises one ConfigError with every problem of all three steps.
    """
    found = inspect_file(path, env, resolve=resolve, allow_placeholders=allow_placeholders)
    if found.problems or found.config is None:
        raise ConfigError(found.problems)
    return found.config, found.credentials


def inspect_file(
    path: Path,
    env: Mapping[str, str] | None = None,
    *,
    resolve: bool = True,
    allow_placeholders: bool = False,
) -> FileCheck:
    """Every problem of the file, with its line. Credentials are resolved (nothing fetched) for
    each account whose provider and credentials are valid, even when another part of the file
    is wrong, so a second round is never needed."""
    from exporter.credentials.chain import resolve_provider

    try:
        data, lines, problems = read_yaml(path)
    except ConfigError as err:
        return FileCheck(None, {}, list(err.details))
    problems += config_problems(data, lines)
    credentials: dict[AccountId, Resolved] = {}
    if resolve and isinstance(data, dict) and isinstance(data.get("accounts"), list):
        env = os.environ if env is None else env
        reported = {p.error for p in problems}
        for index, raw in enumerate(data["accounts"]):
            if not isinstance(raw, dict) or raw.get("provider") not in REGIONS:
                continue  # reported above
            try:  # only the credentials need to be valid: other mistakes are reported above
                creds = Credentials.model_validate(raw.get("credentials") or {})
            except ValidationError:
                continue
            loc = ("accounts", index, "credentials")
            where, line = _location(loc, data), _line(loc, lines)
            wrong = credential_problems(raw["provider"], creds)
            if wrong:
                problems += [ConfigProblem(where, m, line=line) for m in wrong if m not in reported]
                continue
            endpoints = {
                key: raw[key]
                for key in ("sts_endpoint", "metadata_endpoint")
                if isinstance(raw.get(key), str)
            }
            account = Account.model_construct(
                name=str(raw.get("name")), provider=raw["provider"], credentials=creds, **endpoints
            )
            try:
                credentials[(account.provider, account.name)] = resolve_provider(
                    account, env, allow_placeholders=allow_placeholders
                )
            except ValueError as err:
                problems.append(ConfigProblem(where, str(err), line=line))
    config: Config | None = None
    with contextlib.suppress(ValidationError):
        config = Config.model_validate(data)
    problems.sort(key=lambda p: (p.line or 0, p.location))
    return FileCheck(config, credentials, [replace(p, file=str(path)) for p in problems])


AccountId = tuple[str, str]
"""(provider, account name): account names are unique per provider."""


def resolve_all(
    config: Config, env: Mapping[str, str] | None = None, *, allow_placeholders: bool = False
) -> dict[AccountId, ResolvedCredentials]:
    """Resolve every account's credentials up front, so a bad one stops the start."""
    env = os.environ if env is None else env
    resolved: dict[AccountId, ResolvedCredentials] = {}
    problems: list[ConfigProblem] = []
    for index, account in enumerate(config.accounts):
        try:
            resolved[(account.provider, account.name)] = resolve_credentials(
                account, env, allow_placeholders=allow_placeholders
            )
        except ValueError as err:
            problems.append(ConfigProblem(f"accounts[{index}] ({account.name})", str(err)))
    if problems:
        raise ConfigError(problems)
    return resolved
