"""--check-config against the exporter-toolkit web config: every key applied, or refused clearly."""

from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest

from exporter.cli import main
from tests.webtls import Pki, make_pki

CONFIG = "accounts:\n  - {name: a, provider: aliyun, regions: [cn-shanghai]}\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def check(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, web: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    clean_env.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIreal")
    clean_env.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "s3cr3tvalue")
    (tmp_path / "config.yml").write_text(CONFIG)
    (tmp_path / "web.yml").write_text(web)
    code = main(
        [
            "--check-config",
            "--config.file",
            str(tmp_path / "config.yml"),
            "--web.config.file",
            str(tmp_path / "web.yml"),
        ]
    )
    return code, capsys.readouterr().err


def tls(pki: Pki, extra: str = "") -> str:
    return (
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
        + extra
    )


REFUSED = {
    "typo in tls_server_config": ("  cert_fle: x\n", "cert_fle: unknown key"),
    "RequestClientCert": (
        "  client_auth_type: RequestClientCert\n",
        "cannot accept unverified ones",
    ),
    "RequireAnyClientCert": (
        "  client_auth_type: RequireAnyClientCert\n",
        "cannot accept unverified ones",
    ),
    "RequireClientCert": ("  client_auth_type: RequireClientCert\n", "not supported"),
    "unknown client_auth_type": ("  client_auth_type: Sometimes\n", "client_auth_type"),
    "verify without a CA": (
        "  client_auth_type: RequireAndVerifyClientCert\n",
        "needs client_ca_file",
    ),
    "CA without a policy": (
        "  client_ca_file: {ca}\n",
        "client CA's have been configured without a Client Auth Policy",
    ),
    "SANs without verification": ("  client_allowed_sans: [a]\n", "client_allowed_sans needs"),
    "TLS 1.3 cipher suite": (
        "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
        "TLS 1.3 suites are not configurable",
    ),
    "unknown cipher suite": (
        "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
        "unknown or insecure cipher suite",
    ),
    "two curves": (
        "  curve_preferences: [X25519, CurveP256]\n",
        "one curve only",
    ),
    "unknown curve": ("  curve_preferences: [CurveP999]\n", "unknown curve"),
    "unknown TLS version": ("  min_version: TLS14\n", "min_version"),
    "min above max": (
        "  min_version: TLS13\n  max_version: TLS12\n",
        "min_version is above max_version",
    ),
    "cert and cert_file": ("  cert: x\n", "set cert or cert_file, not both"),
    "http2": ("http_server_config:\n  http2: true\n", "http2 is not supported"),
    "header not allowed": (
        "http_server_config:\n  headers:\n    Server: x\n",
        "HTTP header 'Server' can not be configured",
    ),
    "header value not allowed": (
        "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
        "invalid value for X-Frame-Options",
    ),
    "unknown http_server_config key": ("http_server_config:\n  idle: 1\n", "idle: unknown key"),
    "unknown top-level key": ("tls_config: {}\n", "tls_config: unknown key"),
    "not a bcrypt hash": ("basic_auth_users:\n  u: plaintext\n", "not a bcrypt hash"),
    "rate_limit without interval": ("rate_limit:\n  burst: 1\n", "rate_limit.interval"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_check_config_refuses(
    case: str,
    pki: Pki,
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra, message = REFUSED[case]
    code, err = check(tmp_path, clean_env, tls(pki, extra.replace("{ca}", str(pki.ca))), capsys)
    assert code == 2, err
    assert message in err, err
    assert "Traceback" not in err


def test_tls_server_config_must_be_a_mapping(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = check(tmp_path, clean_env, "tls_server_config: yes\n", capsys)
    assert code == 2 and "tls_server_config" in err


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        ("garbage.crt", "server.key", "cannot load"),
        ("server.crt", "client.key", "cannot load"),  # a key that does not match
        ("missing.crt", "server.key", "cannot load"),
    ],
)
def test_check_config_loads_certificate_and_key(
    cert: str,
    key: str,
    message: str,
    pki: Pki,
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (pki.dir / "garbage.crt").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    web = f"tls_server_config:\n  cert_file: {pki.dir / cert}\n  key_file: {pki.dir / key}\n"
    code, err = check(tmp_path, clean_env, web, capsys)
    assert code == 2 and message in err, err


def test_a_complete_web_config_passes(
    pki: Pki, tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web = tls(
        pki,
        f"  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {pki.ca}\n"
        "  client_allowed_sans: [prometheus.example]\n"
        "  min_version: TLS12\n  max_version: TLS13\n  prefer_server_cipher_suites: false\n"
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n"
        "  curve_preferences: [X25519]\n"
        "http_server_config:\n  http2: false\n  headers:\n    X-Content-Type-Options: nosniff\n"
        "rate_limit:\n  burst: 10\n  interval: 1s\n"
        f"basic_auth_users:\n  prom: '{hashed}'\n",
    )
    code, err = check(tmp_path, clean_env, web, capsys)
    assert code == 0, err


def test_relative_paths_are_relative_to_the_web_config(
    pki: Pki, tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "s.crt").write_bytes(pki.server_cert.read_bytes())
    (tmp_path / "s.key").write_bytes(pki.server_key.read_bytes())
    web = "tls_server_config:\n  cert_file: s.crt\n  key_file: s.key\n"
    code, err = check(tmp_path, clean_env, web, capsys)
    assert code == 0, err


def test_demo_honours_the_web_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--demo", "--check-config", "--web.config.file", str(tmp_path / "missing.yml")])
    assert code == 2
    assert "cannot read web config" in capsys.readouterr().err
