"""Credential configuration: types and their fields, the default chains, --check-config, --probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from exporter.cli import main
from exporter.config import parse_config
from exporter.credentials.chain import resolve_provider, resolve_providers
from exporter.errors import ConfigError
from exporter.simulator import Simulator, SimulatorServer
from exporter.simulator.core import (
    DEMO_ALIYUN_ACCESS_KEY_ID,
    DEMO_ALIYUN_ACCESS_KEY_SECRET,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
)
from exporter.simulator.identity import (
    DEMO_ALIYUN_OIDC_PROVIDER_ARN,
    DEMO_ALIYUN_ROLE_ARN,
    DEMO_TENCENT_PROVIDER_ID,
    DEMO_TENCENT_ROLE_ARN,
)
from tests.conftest import fleet_now


def _account(provider: str = "aliyun", **credentials: object) -> dict[str, object]:
    region = "cn-shanghai" if provider == "aliyun" else "ap-guangzhou"
    return {"name": "a", "provider": provider, "regions": [region], "credentials": credentials}


def problems(*accounts: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config({"accounts": list(accounts)})
    return [str(d) for d in err.value.details]


def kind(account: dict[str, object], env: dict[str, str], home: Path) -> str:
    parsed = parse_config({"accounts": [account]}).accounts[0]
    return resolve_provider(parsed, env, home=home).provider.kind


def test_a_type_of_the_other_cloud_is_refused() -> None:
    (problem,) = problems(_account("tencent", type="oidc_role_arn"))
    assert "does not apply to provider tencent" in problem and "oidc_role" in problem


def test_fields_that_do_not_apply_to_the_type_are_refused() -> None:
    (problem,) = problems(_account(type="oidc_role_arn", access_key_id="LTAI1", role_name="x"))
    assert "['access_key_id', 'role_name']" in problem and "type oidc_role_arn" in problem
    (problem,) = problems(_account("tencent", role_arn="qcs::cam::uin/1:roleName/r"))
    assert "without a type" in problem


def test_durations_outside_the_sts_limits_are_refused() -> None:
    (problem,) = problems(_account(type="ram_role_arn", duration_seconds=60))
    assert "duration_seconds" in problem


def test_endpoints_take_a_url_per_account() -> None:
    account = {**_account(), "sts_endpoint": "http://127.0.0.1:8080", "metadata_endpoint": "x y"}
    (problem,) = problems(account)
    assert "metadata_endpoint" in problem


OIDC_ENV = {
    "ALIBABA_CLOUD_ROLE_ARN": DEMO_ALIYUN_ROLE_ARN,
    "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": DEMO_ALIYUN_OIDC_PROVIDER_ARN,
}


def test_aliyun_default_chain_order(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t\n")
    keys = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIreal",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "real-secret-1",
    }
    oidc = {**OIDC_ENV, "ALIBABA_CLOUD_OIDC_TOKEN_FILE": str(token)}
    account = _account()
    assert kind(account, {**keys, **oidc}, tmp_path) == "access_key"
    assert kind(account, oidc, tmp_path) == "oidc_role_arn"
    (tmp_path / ".aliyun").mkdir()
    profile = {
        "current": "p",
        "profiles": [{"name": "p", "mode": "EcsRamRole", "ram_role_name": "r"}],
    }
    (tmp_path / ".aliyun" / "config.json").write_text(json.dumps(profile))
    assert kind(account, {}, tmp_path) == "ecs_ram_role"  # via the CLI profile's mode
    disabled = {"ALIBABA_CLOUD_CLI_PROFILE_DISABLED": "true"}
    uri = {"ALIBABA_CLOUD_CREDENTIALS_URI": "http://127.0.0.1:1/creds"}
    assert kind(account, {**disabled, **uri}, tmp_path) == "credentials_uri"
    assert (
        kind(account, {**disabled, "ALIBABA_CLOUD_ECS_METADATA": "r"}, tmp_path) == "ecs_ram_role"
    )
    with pytest.raises(ValueError, match="no credentials"):
        kind(account, disabled, tmp_path)  # never an implicit instance role


def test_tencent_default_chain_order(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    keys = {"TENCENTCLOUD_SECRET_ID": "AKIDreal", "TENCENTCLOUD_SECRET_KEY": "real-key-1"}
    tke = {
        "TKE_REGION": "ap-guangzhou",
        "TKE_PROVIDER_ID": DEMO_TENCENT_PROVIDER_ID,
        "TKE_WEB_IDENTITY_TOKEN_FILE": str(token),
        "TKE_ROLE_ARN": DEMO_TENCENT_ROLE_ARN,
    }
    account = _account("tencent")
    assert kind(account, {**keys, **tke}, tmp_path) == "secret"
    assert kind(account, {**keys, "TENCENTCLOUD_SESSION_TOKEN": "t"}, tmp_path) == "secret"
    assert kind(account, tke, tmp_path) == "oidc_role"
    (tmp_path / ".tencentcloud").mkdir()
    (tmp_path / ".tencentcloud" / "credentials").write_text(
        "[default]\nsecret_id = AKIDprofile\nsecret_key = profile-key-1\n"
    )
    assert kind(account, tke, tmp_path) == "secret"  # the profile comes before TKE OIDC
    assert kind(_account("tencent", type="profile"), {}, tmp_path) == "secret"


def test_missing_files_and_variables_are_config_problems(tmp_path: Path) -> None:
    config = parse_config(
        {
            "accounts": [
                _account(type="oidc_role_arn", oidc_token_file=str(tmp_path / "nope")),
                {**_account("tencent", type="oidc_role"), "name": "b"},
                {**_account(type="cli_profile", profile_file=str(tmp_path / "x")), "name": "c"},
            ]
        }
    )
    with pytest.raises(ConfigError) as err:
        resolve_providers(config, OIDC_ENV, home=tmp_path)
    lines = [str(d) for d in err.value.details]
    assert len(lines) == 3, lines
    assert "accounts[0] (a)" in lines[0] and "cannot read" in lines[0]
    for name in ("TKE_ROLE_ARN", "TKE_REGION", "TKE_PROVIDER_ID", "TKE_WEB_IDENTITY_TOKEN_FILE"):
        assert name in lines[1]  # every missing variable at once
    assert "CLI profile" in lines[2]


def _write_config(tmp_path: Path, accounts: list[dict[str, object]]) -> str:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"accounts": accounts}))
    return str(path)


def test_check_config_names_each_accounts_credential_kind_without_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "TENCENTCLOUD_SECRET_ID", "TKE_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    token = tmp_path / "token"
    token.write_text("t\n")
    accounts = [
        {
            **_account(
                type="oidc_role_arn",
                role_arn=DEMO_ALIYUN_ROLE_ARN,
                oidc_provider_arn=DEMO_ALIYUN_OIDC_PROVIDER_ARN,
                oidc_token_file=str(token),
            ),
            "sts_endpoint": "http://127.0.0.1:9",  # discard port: nothing is fetched
        },
        {**_account("tencent", type="cvm_role"), "metadata_endpoint": "http://127.0.0.1:9"},
    ]
    assert main(["--check-config", "--config.file", _write_config(tmp_path, accounts)]) == 0
    out = capsys.readouterr().out
    assert "aliyun/a: credentials oidc_role_arn (config)" in out
    assert "tencent/a: credentials cvm_role (config)" in out


def test_probe_fetches_credentials_and_makes_one_call_per_account(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    sim = Simulator(rate_limit=False, images_per_region=2, fleet_clock=fleet_now)
    token = tmp_path / "token"
    token.write_text("oidc-probe-token\n")
    sim.identity.oidc_tokens.add("oidc-probe-token")
    with SimulatorServer(sim, "aliyun") as ali, SimulatorServer(sim, "tencent") as tc:
        aliyun_url, tencent_url = f"http://{ali.address}", f"http://{tc.address}"
        good = [
            {
                **_account(
                    type="oidc_role_arn",
                    role_arn=DEMO_ALIYUN_ROLE_ARN,
                    oidc_provider_arn=DEMO_ALIYUN_OIDC_PROVIDER_ARN,
                    oidc_token_file=str(token),
                ),
                "endpoint": aliyun_url,
                "sts_endpoint": aliyun_url,
            },
            {
                **_account(
                    "tencent",
                    type="assume_role",
                    secret_id=DEMO_TENCENT_SECRET_ID,
                    secret_key=DEMO_TENCENT_SECRET_KEY,
                    role_arn=DEMO_TENCENT_ROLE_ARN,
                ),
                "endpoint": tencent_url,
                "sts_endpoint": tencent_url,
            },
        ]
        args = ["--check-config", "--probe", "--config.file"]
        assert main([*args, _write_config(tmp_path, good)]) == 0
        out = capsys.readouterr().out
        assert out.count("probe ok") == 2, out
        assert "DescribeImageInstances ok" in out and "DescribeAssetImageList ok" in out
        bad = [
            good[0],
            {
                **_account(
                    type="ram_role_arn",
                    access_key_id=DEMO_ALIYUN_ACCESS_KEY_ID,
                    access_key_secret=DEMO_ALIYUN_ACCESS_KEY_SECRET,
                    role_arn="acs:ram::1:role/missing",
                ),
                "name": "b",
                "endpoint": aliyun_url,
                "sts_endpoint": aliyun_url,
            },
        ]
        assert main([*args, _write_config(tmp_path, bad)]) == 1
        out = capsys.readouterr().out
    assert "probe ok: aliyun/a" in out
    assert "probe failed: aliyun/b" in out and "EntityNotExist.Role" in out
    assert sim.request_counts[("aliyun", "AssumeRole")] == 1
    assert DEMO_ALIYUN_ACCESS_KEY_SECRET not in out


def test_once_with_pod_identities_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production wiring: default chains find RRSA and TKE OIDC in the environment, the
    holders are bound to the credential client, sources sign with what STS issued."""
    for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "TENCENTCLOUD_SECRET_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    sim = Simulator(rate_limit=False, images_per_region=2, fleet_clock=fleet_now)
    token = tmp_path / "token"
    token.write_text("pod-identity-token\n")
    sim.identity.oidc_tokens.add("pod-identity-token")
    monkeypatch.setenv("ALIBABA_CLOUD_ROLE_ARN", DEMO_ALIYUN_ROLE_ARN)
    monkeypatch.setenv("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", DEMO_ALIYUN_OIDC_PROVIDER_ARN)
    monkeypatch.setenv("ALIBABA_CLOUD_OIDC_TOKEN_FILE", str(token))
    monkeypatch.setenv("TKE_REGION", "ap-guangzhou")
    monkeypatch.setenv("TKE_PROVIDER_ID", DEMO_TENCENT_PROVIDER_ID)
    monkeypatch.setenv("TKE_ROLE_ARN", DEMO_TENCENT_ROLE_ARN)
    monkeypatch.setenv("TKE_WEB_IDENTITY_TOKEN_FILE", str(token))
    with SimulatorServer(sim, "aliyun") as ali, SimulatorServer(sim, "tencent") as tc:
        accounts = [
            {
                **_account(),
                "endpoint": f"http://{ali.address}",
                "sts_endpoint": f"http://{ali.address}",
            },
            {
                **_account("tencent"),
                "endpoint": f"http://{tc.address}",
                "sts_endpoint": f"http://{tc.address}",
            },
        ]
        code = main(["--once", "--config.file", _write_config(tmp_path, accounts)])
    out = capsys.readouterr().out
    assert code == 0, out[-2000:]
    expiry = [
        line
        for line in out.splitlines()
        if line.startswith("imagesec_credential_expiry_timestamp_seconds{")
    ]
    assert len(expiry) == 2
    assert sim.request_counts[("aliyun", "AssumeRoleWithOIDC")] == 1  # one per account, shared
    assert sim.request_counts[("tencent", "AssumeRoleWithWebIdentity")] == 1
    assert "pod-identity-token" not in out


async def test_a_reload_keeps_the_holder_of_an_account_whose_credentials_did_not_change(
    tmp_path: Path,
) -> None:
    from exporter.credentials.pool import CredentialHolders
    from exporter.telemetry import Telemetry

    env = {"TENCENTCLOUD_SECRET_ID": "AKIDreal", "TENCENTCLOUD_SECRET_KEY": "real-key-1"}
    first = parse_config({"accounts": [_account("tencent"), {**_account(), "name": "b"}]})
    aliyun = {
        **_account(type="cvm_role"),
        "provider": "tencent",
        "regions": ["ap-guangzhou"],
        "name": "b",
    }
    second = parse_config({"accounts": [{**_account("tencent"), "rate_limit": 5}, aliyun]})
    env_b = {
        **env,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIb",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s-1",
    }
    async with CredentialHolders.open(Telemetry()) as holders:
        before = holders.for_config(first, env_b)
        after = holders.for_config(second, env_b)
    assert after[("tencent", "a")] is before[("tencent", "a")]  # only rate_limit changed
    assert after[("tencent", "b")].kind == "cvm_role"
    assert ("aliyun", "b") not in after


def test_standalone_simulator_serves_pod_identities_to_the_exporter_process(
    tmp_path: Path,
) -> None:
    """`simulate` alone, then the exporter as a pod would run it: RRSA and TKE OIDC variables
    with the values `simulate --help` prints, the token in a file, STS at the simulator."""
    import os
    import socket
    import subprocess
    import sys
    import time

    from exporter.simulator.identity import DEMO_OIDC_TOKEN
    from tests.test_cli import free_port

    aliyun, tencent = free_port(), free_port()
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "simulate",
            "--aliyun.listen-address",
            f"127.0.0.1:{aliyun}",
            "--tencent.listen-address",
            f"127.0.0.1:{tencent}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", tencent), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        token = tmp_path / "token"
        token.write_text(DEMO_OIDC_TOKEN + "\n")
        a, t = f"http://127.0.0.1:{aliyun}", f"http://127.0.0.1:{tencent}"
        config = tmp_path / "c.yml"
        config.write_text(
            "accounts:\n"
            f"  - {{name: a, provider: aliyun, regions: [cn-shanghai], endpoint: '{a}', sts_endpoint: '{a}'}}\n"
            f"  - {{name: t, provider: tencent, regions: [ap-guangzhou], endpoint: '{t}', sts_endpoint: '{t}'}}\n"
        )
        # The caller's environment (faketime's variables included: both processes must share
        # a clock), without any credential of its own.
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ALIBABA_CLOUD_", "TENCENTCLOUD_", "TKE_"))
        }
        env = {
            **inherited,
            "HOME": str(tmp_path),
            "ALIBABA_CLOUD_ROLE_ARN": DEMO_ALIYUN_ROLE_ARN,
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": DEMO_ALIYUN_OIDC_PROVIDER_ARN,
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE": str(token),
            "TKE_REGION": "ap-guangzhou",
            "TKE_PROVIDER_ID": DEMO_TENCENT_PROVIDER_ID,
            "TKE_ROLE_ARN": DEMO_TENCENT_ROLE_ARN,
            "TKE_WEB_IDENTITY_TOKEN_FILE": str(token),
        }
        base = [sys.executable, "-m", "exporter", "--config.file", str(config)]
        probe = subprocess.run(
            [*base, "--check-config", "--probe"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert probe.returncode == 0, probe.stdout + probe.stderr[-2000:]
        assert "aliyun/a: credentials oidc_role_arn (env)" in probe.stdout
        assert "tencent/t: credentials oidc_role (env)" in probe.stdout
        assert probe.stdout.count("probe ok") == 2
        once = subprocess.run(
            [*base, "--once"], capture_output=True, text=True, timeout=120, env=env
        )
        assert once.returncode == 0, once.stderr[-2000:]
        assert once.stdout.count("imagesec_credential_expiry_timestamp_seconds{") == 2
        assert DEMO_OIDC_TOKEN not in once.stdout + once.stderr + probe.stdout + probe.stderr
    finally:
        sim.terminate()
        sim.wait(timeout=10)
