"""Choose each account's credential provider from its config, the environment and files.

With ``credentials.type`` the provider is that kind, its fields from the config and, where
absent, the vendor's environment variables. Without a type, the vendor's default chain, decided
without the network (the first whose inputs are present):

- Alibaba: config key fields; ``ALIBABA_CLOUD_ACCESS_KEY_ID``/``_SECRET`` (``_SECURITY_TOKEN``);
  RRSA (``ALIBABA_CLOUD_ROLE_ARN``, ``ALIBABA_CLOUD_OIDC_PROVIDER_ARN``,
  ``ALIBABA_CLOUD_OIDC_TOKEN_FILE``); the CLI profile ``~/.aliyun/config.json`` (unless
  ``ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true``); ``ALIBABA_CLOUD_CREDENTIALS_URI``; the ECS RAM
  role when ``ALIBABA_CLOUD_ECS_METADATA`` names it.
- Tencent: config key fields; ``TENCENTCLOUD_SECRET_ID``/``_SECRET_KEY``
  (``_SESSION_TOKEN``); the profile ``~/.tencentcloud/credentials`` or
  ``/etc/tencentcloud/credentials``; TKE OIDC (``TKE_REGION``, ``TKE_PROVIDER_ID``,
  ``TKE_WEB_IDENTITY_TOKEN_FILE``, ``TKE_ROLE_ARN``).

Instance roles are never an implicit last resort (set ``type: ecs_ram_role``/``cvm_role``): a
missing credential should stop the start, not silently borrow whatever role the node has.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from exporter.config import _PLACEHOLDER, Account, AccountId, Config, Credentials
from exporter.credentials import aliyun, tencent
from exporter.credentials.base import CredentialError, Provider, WatchedFile
from exporter.credentials.remote import base_url
from exporter.credentials.static import StaticProvider, Value
from exporter.errors import ConfigError, ConfigProblem

_TRUE = ("true", "1", "yes")


@dataclass(frozen=True, slots=True)
class Resolved:
    """An account's provider and where its choice came from (shown by ``--check-config``)."""

    provider: Provider
    origin: str  # "config", "env", "profile ...": never a value


def _value(creds: Credentials, name: str, env: Mapping[str, str], env_name: str) -> Value | None:
    direct = getattr(creds, name)
    path: Path | None = getattr(creds, f"{name}_file")
    if direct is not None and path is not None:
        raise ValueError(f"set either {name} or {name}_file, not both")
    if path is not None:
        return Value(file=WatchedFile(path, f"{name}_file"))
    if direct is not None:
        return Value(direct.get_secret_value() if isinstance(direct, SecretStr) else direct)
    literal = env.get(env_name) or None
    return Value(literal) if literal else None


def _static(
    kind: str,
    creds: Credentials,
    env: Mapping[str, str],
    names: tuple[str, str, str],
    env_names: tuple[str, str, str],
    allow_placeholders: bool,
) -> StaticProvider:
    config_values = [_value(creds, n, {}, "") for n in names]
    from_config = config_values[0] is not None or config_values[1] is not None
    if from_config:
        key_id, secret, token = config_values
    else:
        key_id, secret, token = (
            _value(creds, n, env, e) for n, e in zip(names, env_names, strict=True)
        )
    if (key_id is None) != (secret is None):  # half a key: say which half is missing
        have, lack = (0, 1) if key_id is not None else (1, 0)
        if from_config:
            raise ValueError(
                f"credentials.{names[have]} is set but credentials.{names[lack]} "
                f"(or {names[lack]}_file) is not"
            )
        raise ValueError(f"{env_names[have]} is set but {env_names[lack]} is not")
    if key_id is None or secret is None:
        raise ValueError(
            f"no credentials: set {env_names[0]} and {env_names[1]}, or credentials.{names[0]} "
            f"and credentials.{names[1]} (or their *_file variants)"
        )
    try:
        values = [v.read() if v is not None else None for v in (key_id, secret)]
    except CredentialError as err:
        raise ValueError(err.message) from None
    if not allow_placeholders and any(v and _PLACEHOLDER.match(v) for v in values):
        raise ValueError("credentials look like a placeholder; set the real key")
    if kind == "sts_token" and token is None:
        raise ValueError(f"type sts_token needs credentials.{names[2]} or {env_names[2]}")
    return StaticProvider(kind, key_id, secret, token)


# What a resolution found missing: every missing field is reported, not only the first.
_MISSING: ContextVar[list[str]] = ContextVar("missing")


def _need(value: str | None, field: str, env_name: str | None = None) -> str:
    if not value:
        hint = f" (or {env_name})" if env_name else ""
        _MISSING.get().append(f"credentials.{field}{hint} is required for this type")
        return ""
    return value


def _file(path: Path | str | None, field: str, env_name: str) -> Path:
    return Path(_need(str(path) if path else None, field, env_name))


_ALIYUN_STATIC = (
    ("access_key_id", "access_key_secret", "security_token"),
    (
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_SECURITY_TOKEN",
    ),
)
_TENCENT_STATIC = (
    ("secret_id", "secret_key", "session_token"),
    ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY", "TENCENTCLOUD_SESSION_TOKEN"),
)


def _aliyun(
    account: Account, kind: str, env: Mapping[str, str], home: Path, allow_placeholders: bool
) -> Provider:
    creds = account.credentials
    vpc = creds.vpc_endpoint_enabled
    if vpc is None:
        vpc = env.get("ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED", "").lower() in _TRUE
    sts = base_url(
        account.sts_endpoint,
        aliyun.sts_url(creds.sts_region or env.get("ALIBABA_CLOUD_STS_REGION"), vpc),
    )
    session = creds.role_session_name or env.get("ALIBABA_CLOUD_ROLE_SESSION_NAME")
    if kind in ("access_key", "sts_token"):
        return _static(kind, creds, env, *_ALIYUN_STATIC, allow_placeholders)
    if kind == "ram_role_arn":
        base = _static("access_key", creds, env, *_ALIYUN_STATIC, allow_placeholders)
        role = aliyun.role_params(
            _need(
                creds.role_arn or env.get("ALIBABA_CLOUD_ROLE_ARN"),
                "role_arn",
                "ALIBABA_CLOUD_ROLE_ARN",
            ),
            session,
            creds.duration_seconds,
            creds.policy,
            sts,
        )
        return aliyun.RamRoleArnProvider(base, role, creds.external_id)
    if kind == "oidc_role_arn":
        role = aliyun.role_params(
            _need(
                creds.role_arn or env.get("ALIBABA_CLOUD_ROLE_ARN"),
                "role_arn",
                "ALIBABA_CLOUD_ROLE_ARN",
            ),
            session,
            creds.duration_seconds,
            creds.policy,
            sts,
        )
        provider_arn = _need(
            creds.oidc_provider_arn or env.get("ALIBABA_CLOUD_OIDC_PROVIDER_ARN"),
            "oidc_provider_arn",
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
        )
        token = _file(
            creds.oidc_token_file or env.get("ALIBABA_CLOUD_OIDC_TOKEN_FILE"),
            "oidc_token_file",
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
        )
        return aliyun.OidcRoleArnProvider(role, provider_arn, token)
    if kind == "ecs_ram_role":
        imdsv1_disabled = creds.imdsv1_disabled
        if imdsv1_disabled is None:
            imdsv1_disabled = env.get("ALIBABA_CLOUD_IMDSV1_DISABLED", "").lower() in _TRUE
        return aliyun.EcsRamRoleProvider(
            base_url(account.metadata_endpoint, aliyun.DEFAULT_METADATA),
            creds.role_name or env.get("ALIBABA_CLOUD_ECS_METADATA") or None,
            imdsv1_disabled,
        )
    if kind == "credentials_uri":
        uri = _need(
            creds.credentials_uri or env.get("ALIBABA_CLOUD_CREDENTIALS_URI"),
            "credentials_uri",
            "ALIBABA_CLOUD_CREDENTIALS_URI",
        )
        return aliyun.CredentialsUriProvider(uri)
    # cli_profile: the profile's mode maps onto one of the kinds above.
    path = creds.profile_file or home / ".aliyun" / "config.json"
    profile = aliyun.read_cli_profile(path, creds.profile or env.get("ALIBABA_CLOUD_PROFILE"))
    mode = profile["mode"]

    def field(name: str) -> str | None:
        value = profile.get(name)
        return str(value) if value not in (None, "") else None

    mapped = Credentials.model_validate(
        {
            "access_key_id": field("access_key_id"),
            "access_key_secret": field("access_key_secret"),
            "security_token": field("sts_token"),
            "role_arn": field("ram_role_arn") or field("role_arn"),
            "role_session_name": field("ram_session_name") or field("role_session_name"),
            "duration_seconds": int(profile.get("expired_seconds") or 3600),
            "external_id": field("external_id"),
            "oidc_provider_arn": field("oidc_provider_arn"),
            "oidc_token_file": field("oidc_token_file"),
            "role_name": field("ram_role_name"),
            "credentials_uri": field("credentials_uri"),
            "sts_region": field("sts_region"),
        }
    )
    target = {
        "AK": "access_key",
        "StsToken": "sts_token",
        "RamRoleArn": "ram_role_arn",
        "EcsRamRole": "ecs_ram_role",
        "OIDC": "oidc_role_arn",
        "CredentialsURI": "credentials_uri",
    }[mode]
    inner = account.model_copy(update={"credentials": mapped})
    # Only the profile's own values: no environment fallback inside a profile.
    return _aliyun(inner, target, {}, home, allow_placeholders)


def _tencent(
    account: Account, kind: str, env: Mapping[str, str], home: Path, allow_placeholders: bool
) -> Provider:
    creds = account.credentials
    sts = base_url(account.sts_endpoint, tencent.DEFAULT_STS)
    if kind in ("secret", "sts_token"):
        return _static(kind, creds, env, *_TENCENT_STATIC, allow_placeholders)
    if kind == "assume_role":
        base = _static("secret", creds, env, *_TENCENT_STATIC, allow_placeholders)
        role = tencent.role(
            _need(creds.role_arn, "role_arn"),
            creds.role_session_name,
            creds.duration_seconds,
            creds.region,
            sts,
        )
        return tencent.AssumeRoleProvider(base, role, creds.external_id, creds.policy)
    if kind == "oidc_role":
        role = tencent.role(
            _need(creds.role_arn or env.get("TKE_ROLE_ARN"), "role_arn", "TKE_ROLE_ARN"),
            creds.role_session_name,
            creds.duration_seconds,
            _need(creds.region or env.get("TKE_REGION"), "region", "TKE_REGION"),
            sts,
        )
        provider_id = _need(
            creds.provider_id or env.get("TKE_PROVIDER_ID"), "provider_id", "TKE_PROVIDER_ID"
        )
        token = _file(
            creds.oidc_token_file or env.get("TKE_WEB_IDENTITY_TOKEN_FILE"),
            "oidc_token_file",
            "TKE_WEB_IDENTITY_TOKEN_FILE",
        )
        return tencent.OidcRoleProvider(role, provider_id, token)
    if kind == "cvm_role":
        return tencent.CvmRoleProvider(
            base_url(account.metadata_endpoint, tencent.DEFAULT_METADATA), creds.role_name
        )
    # profile
    path = creds.profile_file or _tencent_profile_path(home)
    if path is None:
        raise ValueError(
            "no profile file: ~/.tencentcloud/credentials or /etc/tencentcloud/credentials"
        )
    section = tencent.read_profile(path, creds.profile)
    mapped = Credentials.model_validate(
        {
            "secret_id": section.get("secret_id") or None,
            "secret_key": section.get("secret_key") or None,
            "role_arn": section.get("role_arn") or None,
            "role_session_name": section.get("role_session_name") or None,
        }
    )
    inner = account.model_copy(update={"credentials": mapped})
    target = "assume_role" if mapped.role_arn else "secret"
    return _tencent(inner, target, {}, home, allow_placeholders)


def _tencent_profile_path(home: Path) -> Path | None:
    for path in (home / ".tencentcloud" / "credentials", Path("/etc/tencentcloud/credentials")):
        if path.is_file():
            return path
    return None


def default_kind(account: Account, env: Mapping[str, str], home: Path) -> tuple[str, str]:
    """The kind the vendor's default chain picks for ``account``, and why (no network)."""
    creds = account.credentials
    if account.provider == "aliyun":
        if creds.set_fields():
            return (
                "sts_token" if "security_token" in creds.set_fields() else "access_key"
            ), "config"
        if env.get("ALIBABA_CLOUD_ACCESS_KEY_ID") and env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
            return "access_key", "env"
        if all(
            env.get(n)
            for n in (
                "ALIBABA_CLOUD_ROLE_ARN",
                "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
                "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
            )
        ):
            return "oidc_role_arn", "env"
        if (
            env.get("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "").lower() not in _TRUE
            and (home / ".aliyun" / "config.json").is_file()
        ):
            return "cli_profile", str(home / ".aliyun" / "config.json")
        if env.get("ALIBABA_CLOUD_CREDENTIALS_URI"):
            return "credentials_uri", "env"
        if env.get("ALIBABA_CLOUD_ECS_METADATA") and (
            env.get("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "").lower() not in _TRUE
        ):
            return "ecs_ram_role", "env"
        return "access_key", "env"  # fails with the "no credentials" message
    if creds.set_fields():
        return ("sts_token" if "session_token" in creds.set_fields() else "secret"), "config"
    if env.get("TENCENTCLOUD_SECRET_ID") and env.get("TENCENTCLOUD_SECRET_KEY"):
        return "secret", "env"
    profile = _tencent_profile_path(home)
    if profile is not None:
        return "profile", str(profile)
    if all(
        env.get(n)
        for n in ("TKE_REGION", "TKE_PROVIDER_ID", "TKE_WEB_IDENTITY_TOKEN_FILE", "TKE_ROLE_ARN")
    ):
        return "oidc_role", "env"
    return "secret", "env"


def resolve_provider(
    account: Account,
    env: Mapping[str, str],
    *,
    home: Path | None = None,
    allow_placeholders: bool = False,
) -> Resolved:
    """The provider of ``account`` and its origin; files are checked, nothing is fetched.

    Raises:
        ValueError: one line saying what is missing or wrong.
    """
    home = home if home is not None else Path(env.get("HOME") or Path.home())
    kind = account.credentials.type
    origin = "config"
    if kind is None:
        kind, origin = default_kind(account, env, home)
    build = _aliyun if account.provider == "aliyun" else _tencent
    token = _MISSING.set([])
    try:
        provider = build(account, kind, env, home, allow_placeholders)
        problems = _MISSING.get() or provider.check()  # files only once every path is known
    finally:
        _MISSING.reset(token)
    if problems:
        raise ValueError("; ".join(problems))
    return Resolved(provider, origin)


def resolve_providers(
    config: Config,
    env: Mapping[str, str],
    *,
    home: Path | None = None,
    allow_placeholders: bool = False,
) -> dict[AccountId, Resolved]:
    """Every account's provider; every problem of every account in one ``ConfigError``."""
    resolved: dict[AccountId, Resolved] = {}
    problems: list[ConfigProblem] = []
    for index, account in enumerate(config.accounts):
        try:
            resolved[(account.provider, account.name)] = resolve_provider(
                account, env, home=home, allow_placeholders=allow_placeholders
            )
        except ValueError as err:
            problems.append(ConfigProblem(f"accounts[{index}] ({account.name})", str(err)))
    if problems:
        raise ConfigError(problems)
    return resolved
