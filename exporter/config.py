"""The YAML configuration: strict pydantic models, credential resolution, one error per problem."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

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

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> object:
    """Accept seconds as a number or a Prometheus-style string: ``90``, ``90s``, ``5m``, ``1h``."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 1h)")
        return float(match.group(1)) * _UNITS[match.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]

_PLACEHOLDER = re.compile(
    r"^(changeme|change[-_]me|x+|secret|password|todo|your.*|<.*>|\$\{.*\}|.*example.*)$", re.I
)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CollectorSettings(StrictModel):
    enabled: bool = True
    interval: Duration | None = None


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
    endpoint: str | dict[str, str] | None = None  # one for all regions, or per region
    site: Literal["china", "international"] = "china"
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
            if not re.fullmatch(r"[a-z]{2,}(-[a-z0-9]+)+", region):
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
            raise ValueError(f"unknown collector(s) {unknown}; known: {sorted(COLLECTORS)}")
        return value

    @model_validator(mode="after")
    def _provider_rules(self) -> Account:
        creds = self.credentials
        kind = creds.type or ""
        types = ALIYUN_TYPES if self.provider == "aliyun" else TENCENT_TYPES
        if kind and kind not in types:
            raise ValueError(
                f"credentials type {kind!r} does not apply to provider {self.provider} "
                f"(types: {', '.join(types)})"
            )
        allowed = CREDENTIAL_FIELDS[(self.provider, kind)]
        wrong = [f for f in creds.set_fields() if f not in allowed]
        if wrong:
            what = f"type {kind}" if kind else f"provider {self.provider} without a type"
            raise ValueError(f"credentials {wrong} do not apply to {what}")
        for name in self.collectors:
            if COLLECTORS[name].provider != self.provider:
                raise ValueError(f"collector {name} does not apply to provider {self.provider}")
        if isinstance(self.endpoint, dict):
            unknown = sorted(set(self.endpoint) - set(self.regions))
            if unknown:
                raise ValueError(f"endpoint given for regions not listed in regions: {unknown}")
        if self.provider == "aliyun" and self.endpoint is None:
            from exporter.clouds.aliyun.endpoints import sas_endpoint

            hosts: dict[str, str] = {}
            for region in self.regions:
                host = sas_endpoint(region)
                if host in hosts:
                    raise ValueError(
                        f"regions {hosts[host]} and {region} are both served by {host}, which "
                        "answers for the whole site: list one region per site"
                    )
                hosts[host] = region
        return self


class RefreshSettings(StrictModel):
    timeout: Duration = 600.0
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
    if not key_id or not secret:
        raise ValueError(
            f"no credentials: set {id_env} and {secret_env}, or credentials.{id_field} and "
            f"credentials.{secret_field} (or their *_file variants)"
        )
    if not allow_placeholders and (_PLACEHOLDER.match(secret) or _PLACEHOLDER.match(key_id)):
        raise ValueError("credentials look like a placeholder; set the real key")
    return ResolvedCredentials(
        key_id=key_id,
        secret=SecretStr(secret),
        token=SecretStr(token) if token else None,
        origin=origin,
    )


def _location(loc: tuple[int | str, ...], data: Any) -> str:
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


def parse_config(data: Any) -> Config:
    """Validate parsed YAML; every problem becomes one ``ConfigProblem``."""
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem("", "the config file must be a YAML mapping")])
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        problems = [
            ConfigProblem(_location(tuple(e["loc"]), data), e["msg"].removeprefix("Value error, "))
            for e in err.errors(include_url=False, include_input=False)
        ]
        raise ConfigError(problems) from None


def load_config(path: Path) -> Config:
    """Read and validate a YAML config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([ConfigProblem(str(path), f"cannot read: {err.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError([ConfigProblem(where, f"invalid YAML: {problem}")]) from None
    return parse_config(data)


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
