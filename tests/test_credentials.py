"""Every credential kind of both clouds against the simulator over loopback: obtained, used for
signed calls, renewed ahead of expiry, rotated files picked up, failing STS handled."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter import landing
from exporter.collector import HealthCollector
from exporter.config import parse_config
from exporter.credentials import CredentialError, CredentialHolder
from exporter.credentials.chain import resolve_provider
from exporter.refresh import Refresher
from exporter.simulator import Fault, Simulator, SimulatorServer
from exporter.simulator.core import (
    DEMO_ALIYUN_ACCESS_KEY_ID,
    DEMO_ALIYUN_ACCESS_KEY_SECRET,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
)
from exporter.simulator.identity import (
    DEMO_ALIYUN_OIDC_PROVIDER_ARN,
    DEMO_ALIYUN_ROLE_ARN,
    DEMO_INSTANCE_ROLE,
    DEMO_TENCENT_PROVIDER_ID,
    DEMO_TENCENT_ROLE_ARN,
)
from exporter.simulator.signed import aliyun_v3, tencent_tc3
from exporter.sources import build_sources
from exporter.telemetry import Telemetry
from tests.conftest import FakeClock

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
OIDC_1, OIDC_2 = "eyJoaWRkZW4iOiJvaWRjLTEifQ.one", "eyJoaWRkZW4iOiJvaWRjLTIifQ.two"
ONLY_INVENTORY = {
    "sas_baseline": False,
    "sas_vulnerabilities": False,
    "sas_malicious": False,
    "sas_image_risk": False,
    "tcss_image_detail": False,
}


@dataclass
class Env:
    sim: Simulator
    clock: FakeClock
    aliyun: str
    tencent: str
    tmp: Path


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    clock = FakeClock(START)
    sim = Simulator(clock=clock, rate_limit=False, images_per_region=3)
    sim.identity.oidc_tokens |= {OIDC_1, OIDC_2}
    with SimulatorServer(sim, "aliyun") as ali, SimulatorServer(sim, "tencent") as tc:
        yield Env(sim, clock, f"http://{ali.address}", f"http://{tc.address}", tmp_path)


def _file(env: Env, name: str, text: str) -> str:
    path = env.tmp / name
    path.write_text(text)
    return str(path)


def account(env: Env, provider: str, kind: str, name: str = "prod") -> dict[str, Any]:
    """A config account of ``kind`` whose every endpoint is the simulator."""
    creds: dict[str, Any] = {"type": kind}
    if provider == "aliyun":
        base = {"access_key_id": DEMO_ALIYUN_ACCESS_KEY_ID}
        base["access_key_secret_file"] = _file(
            env, "ak-secret", DEMO_ALIYUN_ACCESS_KEY_SECRET + "\n"
        )
        if kind == "access_key":
            creds |= base
        elif kind == "sts_token":
            issued = env.sim.identity.issue("aliyun", DEMO_ALIYUN_ROLE_ARN, 3600)
            creds |= {
                "access_key_id": issued.key_id,
                "access_key_secret": issued.secret,
                "security_token_file": _file(env, "sts-token", issued.token),
            }
        elif kind == "ram_role_arn":
            creds |= base | {"role_arn": DEMO_ALIYUN_ROLE_ARN, "external_id": "abc"}
        elif kind == "oidc_role_arn":
            creds |= {
                "role_arn": DEMO_ALIYUN_ROLE_ARN,
                "oidc_provider_arn": DEMO_ALIYUN_OIDC_PROVIDER_ARN,
                "oidc_token_file": _file(env, "oidc", OIDC_1 + "\n"),
            }
        elif kind == "ecs_ram_role":
            creds |= {"imdsv1_disabled": True}
        elif kind == "credentials_uri":
            path = f"/latest/meta-data/ram/security-credentials/{DEMO_INSTANCE_ROLE}"
            creds |= {"credentials_uri": env.aliyun + path}
        elif kind == "cli_profile":
            profile = {
                "name": "work",
                "mode": "RamRoleArn",
                "access_key_id": DEMO_ALIYUN_ACCESS_KEY_ID,
                "access_key_secret": DEMO_ALIYUN_ACCESS_KEY_SECRET,
                "ram_role_arn": DEMO_ALIYUN_ROLE_ARN,
                "ram_session_name": "cli-session",
                "expired_seconds": 900,
            }
            data = {"current": "work", "profiles": [profile]}
            creds |= {"profile_file": _file(env, "config.json", json.dumps(data))}
        endpoint = env.aliyun
        regions = ["cn-shanghai"]
    else:
        base = {"secret_id": DEMO_TENCENT_SECRET_ID}
        base["secret_key_file"] = _file(env, "tc-key", DEMO_TENCENT_SECRET_KEY + "\n")
        if kind == "secret":
            creds |= base
        elif kind == "sts_token":
            issued = env.sim.identity.issue("tencent", DEMO_TENCENT_ROLE_ARN, 3600)
            creds |= {
                "secret_id": issued.key_id,
                "secret_key": issued.secret,
                "session_token": issued.token,
            }
        elif kind == "assume_role":
            creds |= base | {"role_arn": DEMO_TENCENT_ROLE_ARN, "region": "ap-guangzhou"}
        elif kind == "oidc_role":
            creds |= {
                "role_arn": DEMO_TENCENT_ROLE_ARN,
                "provider_id": DEMO_TENCENT_PROVIDER_ID,
                "region": "ap-guangzhou",
                "oidc_token_file": _file(env, "tke-oidc", OIDC_1 + "\n"),
            }
        elif kind == "profile":
            text = (
                f"[work]\nsecret_id = {DEMO_TENCENT_SECRET_ID}\n"
                f"secret_key = {DEMO_TENCENT_SECRET_KEY}\nrole_arn = {DEMO_TENCENT_ROLE_ARN}\n"
            )
            creds |= {"profile_file": _file(env, "credentials", text), "profile": "work"}
        endpoint = env.tencent
        regions = ["ap-guangzhou"]
    return {
        "name": name,
        "provider": provider,
        "regions": regions,
        "endpoint": endpoint,
        "sts_endpoint": endpoint,
        "metadata_endpoint": endpoint,
        "credentials": creds,
    }


ALIYUN_KINDS = [
    "access_key",
    "sts_token",
    "ram_role_arn",
    "oidc_role_arn",
    "ecs_ram_role",
    "credentials_uri",
    "cli_profile",
]
TENCENT_KINDS = ["secret", "sts_token", "assume_role", "oidc_role", "cvm_role", "profile"]
ALL_KINDS = [("aliyun", k) for k in ALIYUN_KINDS] + [("tencent", k) for k in TENCENT_KINDS]
# Kinds that fetch temporary credentials and renew them.
RENEWING = [
    ("aliyun", "ram_role_arn", "AssumeRole"),
    ("aliyun", "oidc_role_arn", "AssumeRoleWithOIDC"),
    ("aliyun", "ecs_ram_role", "metadata"),
    ("aliyun", "credentials_uri", "metadata"),
    ("aliyun", "cli_profile", "AssumeRole"),
    ("tencent", "assume_role", "AssumeRole"),
    ("tencent", "oidc_role", "AssumeRoleWithWebIdentity"),
    ("tencent", "cvm_role", "metadata"),
    ("tencent", "profile", "AssumeRole"),
]


class Rig:
    """Holders and sources of some accounts, over one HTTP client, on the fake clock."""

    def __init__(self, env: Env, accounts: list[dict[str, Any]], http: httpx.AsyncClient) -> None:
        self.env = env
        self.config = parse_config({"accounts": accounts, "refresh": {"max_attempts": 1}})
        self.telemetry = Telemetry()
        self.holders: dict[tuple[str, str], CredentialHolder] = {}
        for acc in self.config.accounts:
            resolved = resolve_provider(acc, {}, home=env.tmp)
            self.holders[(acc.provider, acc.name)] = CredentialHolder(
                resolved.provider,
                cloud=acc.provider,
                account=acc.name,
                http=http,
                telemetry=self.telemetry,
                clock=env.clock,
                rng=random.Random(7),
            )
        sources = build_sources(
            self.config,
            self.holders,
            self.telemetry,
            http,
            overrides=ONLY_INVENTORY,
            clock=env.clock,
        )
        self.refresher = Refresher(sources, telemetry=self.telemetry, clock=env.clock)

    def holder(self, name: str = "prod") -> CredentialHolder:
        return next(h for (_, n), h in self.holders.items() if n == name)

    async def refresh(self) -> dict[str, tuple[bool, str | None]]:
        """Refresh every source once: {account: (up, last error)}."""
        snapshot = await self.refresher.run_once()
        return {k.account: (s.up, s.last_error) for k, s in snapshot.sources.items()}

    def failures(self, provider: str, name: str, code: str) -> float:
        return self.telemetry.value("imagesec_credential_refresh_failures", (provider, name, code))


@pytest.mark.parametrize(("provider", "kind"), ALL_KINDS)
async def test_credentials_are_obtained_and_sign_calls(env: Env, provider: str, kind: str) -> None:
    async with httpx.AsyncClient() as http:
        rig = Rig(env, [account(env, provider, kind)], http)
        assert rig.holder().kind == (
            "ram_role_arn"
            if kind == "cli_profile"
            else "assume_role"
            if kind == "profile"
            else kind
        )
        assert await rig.refresh() == {"prod": (True, None)}
    creds = rig.holder().current
    assert creds is not None
    temporary = creds.key_id in env.sim.identity.issued
    assert temporary == (kind not in ("access_key", "secret"))
    action = "DescribeImageInstances" if provider == "aliyun" else "DescribeAssetImageList"
    assert env.sim.request_counts[(provider, action)] >= 1


@pytest.mark.parametrize(("provider", "kind", "action"), RENEWING)
async def test_temporary_credentials_are_renewed_ahead_of_expiry(
    env: Env, provider: str, kind: str, action: str
) -> None:
    async with httpx.AsyncClient() as http:
        rig = Rig(env, [account(env, provider, kind)], http)
        holder = rig.holder()
        first = await holder.get()
        assert first.expiration is not None
        lifetime = first.expiration - START
        env.clock.now = START + lifetime * 0.65  # before the renewal window (70-80%)
        assert await holder.get() is first
        assert holder.renewals == 1
        env.clock.now = START + lifetime * 0.85
        # Still valid: served at once while the renewal runs in the background.
        assert await holder.get() is first
        await holder.renewal()
        second = await holder.get()
        assert second.key_id != first.key_id and holder.renewals == 2
        assert (
            rig.telemetry.value("imagesec_credential_expiry_timestamp_seconds", (provider, "prod"))
            == second.expiration
        )
        assert await rig.refresh() == {"prod": (True, None)}  # signed with the new key


async def test_concurrent_callers_share_one_renewal(env: Env) -> None:
    async with httpx.AsyncClient() as http:
        rig = Rig(env, [account(env, "tencent", "oidc_role")], http)
        holder = rig.holder()
        import asyncio

        results = await asyncio.gather(*(holder.get() for _ in range(20)))
    assert len({c.key_id for c in results}) == 1
    assert env.sim.request_counts[("tencent", "AssumeRoleWithWebIdentity")] == 1


@pytest.mark.parametrize(
    ("provider", "kind", "action"),
    [
        ("aliyun", "oidc_role_arn", "AssumeRoleWithOIDC"),
        ("tencent", "oidc_role", "AssumeRoleWithWebIdentity"),
    ],
)
async def test_rotated_oidc_token_file_is_used_at_the_next_renewal(
    env: Env, provider: str, kind: str, action: str
) -> None:
    async with httpx.AsyncClient() as http:
        rig = Rig(env, [account(env, provider, kind)], http)
        holder = rig.holder()
        first = await holder.get()
        # The file's trailing newline is not part of the token.
        assert env.sim.identity.oidc_seen == [OIDC_1]
        token_file = env.tmp / ("oidc" if provider == "aliyun" else "tke-oidc")
        token_file.write_text(OIDC_2 + "\n")  # kubelet rotates the projected token
        env.sim.identity.oidc_tokens.discard(OIDC_1)  # ... and the old one stops working
        assert first.expiration is not None
        env.clock.now = START + (first.expiration - START) * 0.9
        await holder.get()
        await holder.renewal()
        assert env.sim.identity.oidc_seen == [OIDC_1, OIDC_2]
        assert holder.current is not None and holder.current.key_id != first.key_id
        assert rig.failures(provider, "prod", "rejected") == 0


@pytest.mark.parametrize(
    ("provider", "kind", "secret_file", "key_id", "secret"),
    [
        (
            "aliyun",
            "access_key",
            "ak-secret",
            DEMO_ALIYUN_ACCESS_KEY_ID,
            DEMO_ALIYUN_ACCESS_KEY_SECRET,
        ),
        ("tencent", "secret", "tc-key", DEMO_TENCENT_SECRET_ID, DEMO_TENCENT_SECRET_KEY),
    ],
)
async def test_rotated_key_file_is_reread_before_the_next_call(
    env: Env, provider: str, kind: str, secret_file: str, key_id: str, secret: str
) -> None:
    async with httpx.AsyncClient() as http:
        rig = Rig(env, [account(env, provider, kind)], http)
        assert await rig.refresh() == {"prod": (True, None)}
        # The Kubernetes secret is rotated: the old secret is revoked, the new one is mounted.
        keys = env.sim.aliyun_keys if provider == "aliyun" else env.sim.tencent_keys
        keys[key_id] = "rotated-secret-value-2"
        (env.tmp / secret_file).write_text("rotated-secret-value-2\n")
        assert await rig.refresh() == {"prod": (True, None)}
        current = rig.holder().current
        assert current is not None and current.secret == "rotated-secret-value-2"


@pytest.mark.parametrize(("provider", "kind", "action"), RENEWING)
async def test_failing_sts_keeps_credentials_until_expiry_then_only_that_account_is_down(
    env: Env, provider: str, kind: str, action: str
) -> None:
    other_kind = "access_key" if provider == "aliyun" else "secret"
    accounts = [account(env, provider, kind), account(env, provider, other_kind, name="other")]
    async with httpx.AsyncClient() as http:
        rig = Rig(env, accounts, http)
        assert await rig.refresh() == {"prod": (True, None), "other": (True, None)}
        first = rig.holder().current
        assert first is not None and first.expiration is not None
        env.sim.faults.add(
            Fault(kind="server_error", cloud=provider, action=action, status=503, times=None)  # type: ignore[arg-type]
        )
        env.clock.now = START + (first.expiration - START) * 0.85
        assert await rig.refresh() == {"prod": (True, None), "other": (True, None)}
        await rig.holder().renewal()
        assert rig.failures(provider, "prod", "http_5xx") == 1
        assert rig.holder().current is first  # kept while valid
        env.clock.now = first.expiration + 1
        state = await rig.refresh()
        assert state["other"] == (True, None)
        up, error = state["prod"]
        assert not up and error is not None and "expired" in error
        assert (
            rig.telemetry.value(
                "imagesec_refresh_failures",
                (
                    provider,
                    "prod",
                    rig.config.accounts[0].regions[0],
                    "sas_images" if provider == "aliyun" else "tcss_images",
                    "credentials_expired",
                ),
            )
            == 1
        )
        assert rig.failures(provider, "prod", "http_5xx") >= 2
        # STS recovers: the next refresh brings the account back.
        env.sim.faults.clear()
        env.clock.advance(400)
        assert (await rig.refresh())["prod"] == (True, None)


@pytest.mark.parametrize(
    ("provider", "code"),
    [("aliyun", "InvalidSecurityToken.Expired"), ("tencent", "AuthFailure.TokenFailure")],
)
def test_expired_temporary_keys_are_refused_with_the_vendor_code(
    env: Env, provider: str, code: str
) -> None:
    role = DEMO_ALIYUN_ROLE_ARN if provider == "aliyun" else DEMO_TENCENT_ROLE_ARN
    issued = env.sim.identity.issue(provider, role, 900)  # type: ignore[arg-type]

    def call(now: float, token: str) -> str:
        if provider == "aliyun":
            request = aliyun_v3(
                "DescribeImageInstances",
                {"PageSize": "1"},
                now=now,
                access_key_id=issued.key_id,
                secret=issued.secret,
                token=token,
            )
            response = env.sim.handle("aliyun", request)
            return str(response.json().get("Code", "ok"))
        request = tencent_tc3(
            "DescribeAssetImageList",
            {"Limit": 1},
            now=now,
            secret_id=issued.key_id,
            secret_key=issued.secret,
            token=token,
        )
        body = env.sim.handle("tencent", request).json()["Response"]
        return str(body.get("Error", {}).get("Code", "ok"))

    assert call(START, issued.token) == "ok"
    assert call(START, "forged") != "ok"
    env.clock.now = issued.expiration
    assert call(issued.expiration, issued.token) == code


async def test_secrets_never_reach_logs_metrics_landing_page_or_errors(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    accounts = [
        account(env, "aliyun", "oidc_role_arn", name="rrsa"),
        account(env, "aliyun", "ram_role_arn", name="role"),
        account(env, "tencent", "oidc_role", name="tke"),
        account(env, "tencent", "assume_role", name="assumed"),
    ]
    async with httpx.AsyncClient() as http:
        rig = Rig(env, accounts, http)
        await rig.refresh()
        secrets = {OIDC_1, DEMO_ALIYUN_ACCESS_KEY_SECRET, DEMO_TENCENT_SECRET_KEY}
        for holder in rig.holders.values():
            assert holder.current is not None
            secrets |= {holder.current.secret, holder.current.token or ""}
            assert holder.current.secret not in repr(holder.current)
        # Then STS rejects everything until the credentials expire.
        env.sim.identity.oidc_tokens.clear()
        env.sim.faults.add(Fault(kind="server_error", action="AssumeRole", times=None))
        env.clock.advance(8000)
        snapshot = await rig.refresher.run_once()
    secrets.discard("")
    assert all(not s.up for s in snapshot.sources.values())
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)  # extras included
    errors = " ".join(str(s.last_error) for s in snapshot.sources.values())
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(lambda: snapshot, rig.telemetry))
    metrics = generate_latest(registry).decode()
    page = landing.render(snapshot, 1_800_000_000.0).decode()
    assert "credentials_expired" in errors and "imagesec_credential_refresh_failures" in metrics
    for secret in secrets:
        for where, blob in (
            ("logs", text),
            ("errors", errors),
            ("metrics", metrics),
            ("page", page),
        ):
            assert secret not in blob, f"a secret leaked into the {where}"


async def test_first_fetch_failure_is_an_auth_error_and_is_retried_with_backoff(env: Env) -> None:
    async with httpx.AsyncClient() as http:
        acc = account(env, "aliyun", "oidc_role_arn")
        acc["credentials"]["role_arn"] = "acs:ram::1:role/missing"
        rig = Rig(env, [acc], http)
        with pytest.raises(CredentialError) as err:
            await rig.holder().get()
        assert err.value.code == "credentials_unavailable"
        assert "EntityNotExist.Role" in str(err.value)
        with pytest.raises(CredentialError):
            await rig.holder().get()  # within the backoff: no second call
        assert env.sim.request_counts[("aliyun", "AssumeRoleWithOIDC")] == 1
        env.clock.advance(11)
        with pytest.raises(CredentialError):
            await rig.holder().get()
        assert env.sim.request_counts[("aliyun", "AssumeRoleWithOIDC")] == 2
        assert rig.failures("aliyun", "prod", "rejected") == 2


@pytest.mark.parametrize(
    ("provider", "kind", "action", "code"),
    [
        ("aliyun", "oidc_role_arn", "AssumeRoleWithOIDC", "InvalidSecurityToken.Expired"),
        ("tencent", "oidc_role", "AssumeRoleWithWebIdentity", "AuthFailure.TokenFailure"),
    ],
)
async def test_a_key_the_cloud_refuses_is_renewed_before_the_next_request(
    env: Env, provider: str, kind: str, action: str, code: str
) -> None:
    import dataclasses

    async with httpx.AsyncClient() as http:
        rig = Rig(env, [account(env, provider, kind)], http)
        assert await rig.refresh() == {"prod": (True, None)}
        first = rig.holder().current
        assert first is not None
        # The cloud stops accepting the key early (session revoked, or its clock runs ahead).
        issued = env.sim.identity.issued
        issued[first.key_id] = dataclasses.replace(issued[first.key_id], expiration=START)
        up, error = (await rig.refresh())["prod"]
        assert not up and error is not None and code in error
        assert env.sim.request_counts[(provider, action)] == 1  # nothing renewed yet
        assert await rig.refresh() == {"prod": (True, None)}
        assert env.sim.request_counts[(provider, action)] == 2
        current = rig.holder().current
        assert current is not None and current.key_id != first.key_id
