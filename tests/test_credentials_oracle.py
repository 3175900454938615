"""Oracles: the vendors' own credential libraries fetch credentials from the simulated STS and
instance metadata (over HTTPS with a test certificate where they speak nothing else), and the
official Sas and TCSS SDKs accept the temporary keys our providers obtain.

These libraries and SDKs sign with the real time, so the simulator runs on the real clock here.
"""

from __future__ import annotations

import dataclasses
import random
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alibabacloud_credentials.provider import (  # type: ignore[import-untyped]
    EcsRamRoleCredentialsProvider,
    OIDCRoleArnCredentialsProvider,
    RamRoleArnCredentialsProvider,
    URLCredentialsProvider,
)
from alibabacloud_sas20181203 import models as sas_models  # type: ignore[import-untyped]
from alibabacloud_sas20181203.client import Client as SasSdk  # type: ignore[import-untyped]
from alibabacloud_tea_openapi import models as open_api_models  # type: ignore[import-untyped]
from alibabacloud_tea_openapi.exceptions import ClientException  # type: ignore[import-untyped]
from tencentcloud.common import credential as tc_credential  # type: ignore[import-untyped]
from tencentcloud.common.profile.client_profile import ClientProfile  # type: ignore[import-untyped]
from tencentcloud.common.profile.http_profile import HttpProfile  # type: ignore[import-untyped]
from tencentcloud.tcss.v20201101 import models as tcss_models  # type: ignore[import-untyped]
from tencentcloud.tcss.v20201101 import tcss_client

from exporter.config import parse_config
from exporter.credentials import Credential, CredentialHolder
from exporter.credentials.chain import resolve_provider
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
    DEMO_INSTANCE_ROLE,
    DEMO_TENCENT_PROVIDER_ID,
    DEMO_TENCENT_ROLE_ARN,
)
from tests.conftest import fleet_now, require_tool

TOKEN = "eyJvcmFjbGUiOiJ0b2tlbiJ9.oracle"


@dataclass
class Clouds:
    sim: Simulator
    aliyun: str  # host:port, plain HTTP
    tencent: str
    aliyun_tls: str  # host:port, HTTPS with the test certificate
    tencent_tls: str
    ca: str


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "sim.crt", folder / "sim.key"
    subprocess.run(
        [
            require_tool("openssl"),
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture
def clouds(certificate: tuple[str, str]) -> Iterator[Clouds]:
    sim = Simulator(rate_limit=False, images_per_region=2, fleet_clock=fleet_now)
    sim.identity.oidc_tokens.add(TOKEN)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    with (
        SimulatorServer(sim, "aliyun") as ali,
        SimulatorServer(sim, "tencent") as tc,
        SimulatorServer(sim, "aliyun", ssl_context=context) as ali_tls,
        SimulatorServer(sim, "tencent", ssl_context=context) as tc_tls,
    ):
        yield Clouds(sim, ali.address, tc.address, ali_tls.address, tc_tls.address, certificate[0])


def _sas_call(clouds: Clouds, key_id: str, secret: str, token: str) -> int:
    config = open_api_models.Config(
        access_key_id=key_id,
        access_key_secret=secret,
        security_token=token,
        endpoint=clouds.aliyun,
        protocol="http",
    )
    request = sas_models.DescribeImageInstancesRequest(current_page=1, page_size=1)
    return int(SasSdk(config).describe_image_instances(request).body.page_info.total_count)


def _tcss_call(clouds: Clouds, key_id: str, secret: str, token: str) -> int:
    cred = tc_credential.Credential(key_id, secret, token)
    profile = ClientProfile(httpProfile=HttpProfile(endpoint=clouds.tencent, protocol="http"))
    client = tcss_client.TcssClient(cred, "ap-guangzhou", profile)
    request = tcss_models.DescribeAssetImageListRequest()
    request.Limit, request.Offset = 1, 0
    return int(client.DescribeAssetImageList(request).TotalCount)


def _with_ca(provider: object, ca: str) -> object:
    # The library's runtime options take a CA bundle (Tea's "ca"); nothing else is changed.
    provider._runtime_options["ca"] = ca  # type: ignore[attr-defined]
    return provider


def test_alibaba_library_assumes_a_role_from_the_simulated_sts(clouds: Clouds) -> None:
    provider = RamRoleArnCredentialsProvider(
        access_key_id=DEMO_ALIYUN_ACCESS_KEY_ID,
        access_key_secret=DEMO_ALIYUN_ACCESS_KEY_SECRET,
        role_arn=DEMO_ALIYUN_ROLE_ARN,
        role_session_name="oracle",
        sts_endpoint=clouds.aliyun_tls,
    )
    creds = _with_ca(provider, clouds.ca).get_credentials()  # type: ignore[attr-defined]
    key_id = creds.get_access_key_id()
    assert key_id in clouds.sim.identity.issued  # its HMAC-SHA1 signature was verified
    total = _sas_call(clouds, key_id, creds.get_access_key_secret(), creds.get_security_token())
    assert total > 0


def test_alibaba_library_sends_the_oidc_token_files_trailing_newline(
    clouds: Clouds, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    provider = OIDCRoleArnCredentialsProvider(
        role_arn=DEMO_ALIYUN_ROLE_ARN,
        oidc_provider_arn=DEMO_ALIYUN_OIDC_PROVIDER_ARN,
        oidc_token_file_path=str(token_file),
        role_session_name="oracle",
        sts_endpoint=clouds.aliyun_tls,
    )
    _with_ca(provider, clouds.ca)
    token_file.write_text(TOKEN)
    creds = provider.get_credentials()
    assert creds.get_access_key_id() in clouds.sim.identity.issued
    # As kubelet writes it, with a newline: the library sends it as part of the token, and
    # STS refuses; this exporter strips it (tests/test_credentials.py).
    token_file.write_text(TOKEN + "\n")
    fresh = OIDCRoleArnCredentialsProvider(
        role_arn=DEMO_ALIYUN_ROLE_ARN,
        oidc_provider_arn=DEMO_ALIYUN_OIDC_PROVIDER_ARN,
        oidc_token_file_path=str(token_file),
        role_session_name="oracle",
        sts_endpoint=clouds.aliyun_tls,
    )
    with pytest.raises(Exception, match=r"AuthenticationFail\.OIDCToken\.Invalid"):
        _with_ca(fresh, clouds.ca).get_credentials()  # type: ignore[attr-defined]
    assert clouds.sim.identity.oidc_seen[-1] == TOKEN + "\n"


def test_alibaba_library_reads_the_simulated_ecs_metadata_and_credentials_uri(
    clouds: Clouds,
) -> None:
    clouds.sim.identity.imdsv1_disabled = True  # the library must use the IMDSv2 token
    ecs = EcsRamRoleCredentialsProvider(disable_imds_v1=True)
    # The metadata host is fixed in the library: point its private attribute at the simulator.
    ecs._EcsRamRoleCredentialsProvider__metadata_service_host = clouds.aliyun
    creds = ecs.get_credentials()
    assert creds.get_access_key_id() in clouds.sim.identity.issued
    path = f"/latest/meta-data/ram/security-credentials/{DEMO_INSTANCE_ROLE}"
    clouds.sim.identity.imdsv1_disabled = False
    uri = URLCredentialsProvider(uri=f"http://{clouds.aliyun}{path}").get_credentials()
    assert uri.get_access_key_id() in clouds.sim.identity.issued


def test_tencent_library_assumes_roles_from_the_simulated_sts(
    clouds: Clouds, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK speaks HTTPS to STS only and verifies against certifi's bundle (it builds its own
    # HttpProfile, so no certification can be passed): trust the test CA for this test.
    import tencentcloud.common.http.request as tc_request  # type: ignore[import-untyped]

    monkeypatch.setattr(tc_request.certifi, "where", lambda: clouds.ca)
    assumed = tc_credential.STSAssumeRoleCredential(
        DEMO_TENCENT_SECRET_ID,
        DEMO_TENCENT_SECRET_KEY,
        DEMO_TENCENT_ROLE_ARN,
        "oracle",
        endpoint=clouds.tencent_tls,
    )
    key_id, secret, token = assumed.get_credential_info()
    assert key_id in clouds.sim.identity.issued  # its TC3 signature (service sts) was verified
    assert _tcss_call(clouds, key_id, secret, token) > 0
    oidc = tc_credential.OIDCRoleArnCredential(
        "ap-guangzhou",
        DEMO_TENCENT_PROVIDER_ID,
        TOKEN,
        DEMO_TENCENT_ROLE_ARN,
        "oracle",
        endpoint=clouds.tencent_tls,
    )
    assert oidc.get_credential_info()[0] in clouds.sim.identity.issued
    cvm = tc_credential.CVMRoleCredential()
    cvm._role_endpoint = f"http://{clouds.tencent}/latest/meta-data/cam/security-credentials/"
    assert cvm.get_credential_info()[0] in clouds.sim.identity.issued


async def _ours(clouds: Clouds, provider: str, credentials: dict[str, object]) -> Credential:
    endpoint = f"http://{clouds.aliyun if provider == 'aliyun' else clouds.tencent}"
    region = "cn-shanghai" if provider == "aliyun" else "ap-guangzhou"
    account = parse_config(
        {
            "accounts": [
                {
                    "name": "oracle",
                    "provider": provider,
                    "regions": [region],
                    "sts_endpoint": endpoint,
                    "metadata_endpoint": endpoint,
                    "credentials": credentials,
                }
            ]
        }
    ).accounts[0]
    resolved = resolve_provider(account, {}, home=Path("/nonexistent"))
    async with httpx.AsyncClient() as http:
        holder = CredentialHolder(
            resolved.provider,
            cloud=provider,
            account="oracle",
            http=http,
            rng=random.Random(1),
        )
        return await holder.get()


async def test_official_sdks_accept_the_temporary_keys_our_providers_obtain(
    clouds: Clouds, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    rrsa = await _ours(
        clouds,
        "aliyun",
        {
            "type": "oidc_role_arn",
            "role_arn": DEMO_ALIYUN_ROLE_ARN,
            "oidc_provider_arn": DEMO_ALIYUN_OIDC_PROVIDER_ARN,
            "oidc_token_file": str(token_file),
        },
    )
    assert rrsa.token is not None
    assert _sas_call(clouds, rrsa.key_id, rrsa.secret, rrsa.token) >= 1
    tke = await _ours(
        clouds,
        "tencent",
        {
            "type": "oidc_role",
            "role_arn": DEMO_TENCENT_ROLE_ARN,
            "provider_id": DEMO_TENCENT_PROVIDER_ID,
            "region": "ap-guangzhou",
            "oidc_token_file": str(token_file),
        },
    )
    assert tke.token is not None
    assert _tcss_call(clouds, tke.key_id, tke.secret, tke.token) >= 1
    # Once expired, the SDK gets the vendor's code from the simulator.
    issued = clouds.sim.identity.issued
    issued[rrsa.key_id] = dataclasses.replace(issued[rrsa.key_id], expiration=0.0)
    with pytest.raises(ClientException) as err:
        _sas_call(clouds, rrsa.key_id, rrsa.secret, rrsa.token)
    assert err.value.code == "InvalidSecurityToken.Expired"
