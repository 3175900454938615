"""Configuration: strict validation with one line per problem, credential resolution."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import Config, load_config, parse_config, resolve_all
from exporter.errors import ConfigError

GOOD = """
accounts:
  - name: prod-cn
    provider: aliyun
    regions: [cn-shanghai, ap-southeast-1]
  - name: prod-tc
    provider: tencent
    regions: [ap-guangzhou, ap-singapore]
    site: international
    collectors:
      tcss_image_detail: {interval: 10m}
collectors:
  sas_images: {interval: 2m}
  sas_malicious: {enabled: false}
refresh:
  timeout: 90s
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    return [str(d) for d in err.value.details]


def test_valid_config_and_interval_precedence(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    aliyun, tencent = config.accounts
    assert config.refresh.timeout == 90
    assert config.collector(aliyun, "sas_images") == (True, 120)
    assert config.collector(aliyun, "sas_malicious")[0] is False
    assert config.collector(aliyun, "sas_baseline") == (True, 900)  # built-in default
    assert config.collector(tencent, "tcss_image_detail") == (True, 600)  # account wins


def test_every_problem_is_reported_once_with_its_location() -> None:
    found = problems(
        {
            "accounts": [
                {"name": "a", "provider": "gcp", "regions": ["us-east-1"]},
                {"name": "b", "provider": "aliyun", "regions": ["Not A Region"], "bogus": 1},
            ],
            "collectors": {"sas_imagez": {}},
        }
    )
    assert len(found) == 4, found
    joined = "\n".join(found)
    assert "accounts[0] (a).provider" in joined
    assert "accounts[1] (b).regions" in joined and "not a region id" in joined
    assert "accounts[1] (b).bogus" in joined
    assert "collectors" in joined and "sas_imagez" in joined


def test_two_regions_of_one_sas_site_are_refused() -> None:
    (problem,) = problems(
        {
            "accounts": [
                {"name": "a", "provider": "aliyun", "regions": ["cn-hangzhou", "cn-beijing"]}
            ]
        }
    )
    assert "tds.cn-shanghai.aliyuncs.com" in problem


def test_foreign_collectors_and_duplicate_accounts_are_refused() -> None:
    tencent = {"name": "a", "provider": "tencent", "regions": ["ap-guangzhou"]}
    (problem,) = problems({"accounts": [{**tencent, "collectors": {"sas_images": {}}}]})
    assert "collector sas_images does not apply to tencent" in problem
    (problem,) = problems({"accounts": [tencent, {**tencent, "regions": ["ap-shanghai"]}]})
    assert "unique per provider" in problem and "tencent/a" in problem
    # The same name under two providers is fine: the provider label tells them apart.
    parse_config(
        {"accounts": [tencent, {"name": "a", "provider": "aliyun", "regions": ["cn-shanghai"]}]}
    )


def test_bad_durations_and_yaml(tmp_path: Path) -> None:
    found = problems(
        {
            "accounts": [{"name": "a", "provider": "aliyun", "regions": ["cn-shanghai"]}],
            "collectors": {"sas_images": {"interval": "soon"}},
        }
    )
    assert "not a duration" in found[0]
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "accounts: [\n  - name: x\n   bad"))
    assert "config.yml:" in str(err.value) and "invalid YAML" in str(err.value)
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.yml")


def _config(credentials: dict[str, str] | None = None, provider: str = "aliyun") -> Config:
    region = "cn-shanghai" if provider == "aliyun" else "ap-guangzhou"
    account: dict[str, object] = {"name": "a", "provider": provider, "regions": [region]}
    if credentials is not None:
        account["credentials"] = credentials
    return parse_config({"accounts": [account]})


def test_credentials_from_vendor_environment(clean_env: pytest.MonkeyPatch) -> None:
    env = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIreal",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s3cr3t-value",
        "ALIBABA_CLOUD_SECURITY_TOKEN": "sts",
    }
    creds = resolve_all(_config(), env)[("aliyun", "a")]
    assert (creds.key_id, creds.secret.get_secret_value(), creds.origin) == (
        "LTAIreal",
        "s3cr3t-value",
        "env",
    )
    assert creds.token is not None and creds.token.get_secret_value() == "sts"
    assert "s3cr3t-value" not in repr(creds)


def test_tencent_session_token_is_read_from_env() -> None:
    env = {
        "TENCENTCLOUD_SECRET_ID": "AKIDreal",
        "TENCENTCLOUD_SECRET_KEY": "k3y-value",
        "TENCENTCLOUD_SESSION_TOKEN": "tok",
    }
    creds = resolve_all(_config(provider="tencent"), env)[("tencent", "a")]
    assert creds.token is not None and creds.token.get_secret_value() == "tok"


def test_credentials_from_files(tmp_path: Path) -> None:
    (tmp_path / "id").write_text("LTAIfile\n")
    (tmp_path / "secret").write_text("file-secret\n")
    config = _config(
        {
            "access_key_id_file": str(tmp_path / "id"),
            "access_key_secret_file": str(tmp_path / "secret"),
        }
    )
    creds = resolve_all(config, {})[("aliyun", "a")]
    assert (creds.key_id, creds.secret.get_secret_value(), creds.origin) == (
        "LTAIfile",
        "file-secret",
        "file",
    )


def test_missing_unreadable_and_placeholder_credentials(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_all(_config(), {})
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in str(err.value)
    with pytest.raises(ConfigError) as err:
        resolve_all(
            _config({"access_key_id": "x1", "access_key_secret_file": str(tmp_path / "nope")}), {}
        )
    assert "cannot read" in str(err.value)
    placeholder = _config({"access_key_id": "LTAIreal", "access_key_secret": "YourAccessKeySecret"})
    with pytest.raises(ConfigError) as err:
        resolve_all(placeholder, {})
    assert "placeholder" in str(err.value) and "YourAccessKeySecret" not in str(err.value)
    assert resolve_all(placeholder, {}, allow_placeholders=True)


def test_credentials_of_the_other_vendor_are_refused() -> None:
    found = problems(
        {
            "accounts": [
                {
                    "name": "a",
                    "provider": "aliyun",
                    "regions": ["cn-shanghai"],
                    "credentials": {"secret_id": "x"},
                }
            ]
        }
    )
    assert "secret_id" in found[0]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_check_config_exits_0_when_valid(tmp_path: Path) -> None:
    env = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIreal",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "real-secret-1",
        "TENCENTCLOUD_SECRET_ID": "AKIDreal",
        "TENCENTCLOUD_SECRET_KEY": "real-key-1",
    }
    result = run_cli("--check-config", "--config.file", str(write(tmp_path, GOOD)), env=env)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_check_config_prints_one_line_per_problem_and_exits_2(tmp_path: Path) -> None:
    bad = "accounts:\n  - {name: a, provider: gcp, regions: [x]}\n  - {name: b, provider: aliyun, regions: []}\n"
    result = run_cli("--check-config", "--config.file", str(write(tmp_path, bad)))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4, lines
    path = tmp_path / "config.yml"
    assert [line.split(": accounts[")[0] for line in lines] == [
        f"config error: {path}:2",
        f"config error: {path}:2",
        f"config error: {path}:3",
        f"config error: {path}:3",
    ]
    # b's credentials are checked although its regions are wrong: no second round needed.
    assert any("accounts[1] (b).credentials: no credentials" in line for line in lines)


def test_missing_credentials_stop_the_start(tmp_path: Path) -> None:
    result = run_cli("--once", "--config.file", str(write(tmp_path, GOOD)))
    assert result.returncode == 2
    assert result.stdout == ""  # never half-started
    assert len(result.stderr.strip().splitlines()) == 2


def test_endpoint_per_region() -> None:
    account = {
        "name": "a",
        "provider": "aliyun",
        "regions": ["cn-shanghai", "ap-southeast-1"],
        "endpoint": {"cn-shanghai": "http://127.0.0.1:1", "ap-southeast-1": "127.0.0.1:2"},
    }
    parsed = parse_config({"accounts": [account]}).accounts[0]
    assert parsed.endpoint_for("cn-shanghai") == "http://127.0.0.1:1"
    assert parsed.endpoint_for("ap-southeast-1") == "127.0.0.1:2"
    (problem,) = problems({"accounts": [{**account, "endpoint": {"eu-west-1": "x:1"}}]})
    assert "eu-west-1" in problem


async def test_every_collector_has_a_factory_and_upstreams_are_required() -> None:
    import httpx

    from exporter.config import COLLECTORS
    from exporter.sources import FACTORIES, build_sources
    from exporter.telemetry import Telemetry

    assert set(FACTORIES) == set(COLLECTORS)
    config = parse_config(
        {
            "accounts": [
                {"name": "a", "provider": "aliyun", "regions": ["cn-shanghai", "ap-southeast-1"]}
            ]
        }
    )
    creds = resolve_all(
        config,
        {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIx", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s3cr3t-v"},
    )
    async with httpx.AsyncClient() as http:
        sources = build_sources(config, creds, Telemetry(), http)
        assert len(sources) == 2 * 5
        with pytest.raises(ConfigError) as err:
            build_sources(config, creds, Telemetry(), http, overrides={"sas_images": False})
        lines = [str(d) for d in err.value.details]
        assert len(lines) == 3  # baseline, vulnerabilities, malicious: once per account
        assert (
            "accounts[0] (a): collector sas_baseline needs sas_images, which is disabled" in lines
        )
        kept = build_sources(
            config,
            creds,
            Telemetry(),
            http,
            overrides={
                n: False
                for n in ("sas_images", "sas_baseline", "sas_vulnerabilities", "sas_malicious")
            },
        )
        assert {s.key.source for s in kept} == {"sas_image_risk"}


def test_check_config_reports_credentials_web_config_and_collectors_together(
    tmp_path: Path,
) -> None:
    config = write(tmp_path, "accounts:\n  - {name: a, provider: aliyun, regions: [cn-shanghai]}\n")
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  u: plaintext\n")
    result = run_cli(
        "--check-config",
        "--config.file",
        str(config),
        "--web.config.file",
        str(web),
        "--no-collector.sas_images",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 5, lines  # credentials, web config, 3 collectors without sas_images
    assert any("no credentials" in line for line in lines)
    assert any("not a bcrypt hash" in line for line in lines)
    assert sum("needs sas_images" in line for line in lines) == 3


# Ten different mistakes, each on its own line; the comment names the line the report must give.
MISTAKES = """\
accounts:
  - name: prod
    provider: aliyun
    regions: [cn-shanghia]
    site: international
    rate_limt: 5
    collectors:
      sas_images: {interval: 1ms}
      sas_image: {enabled: false}
  - name: tc
    provider: tencent
    regions: [ap-guangzho]
    credentials:
      secret_id: AKIDonly
  - name: tc2
    provider: tencnet
    regions: [ap-guangzhou]
    regions: [ap-singapore]
collectors:
  tcss_images: {interval: 1h30m, enabled: maybe}
refresh:
  timeout: 10 minutes
  concurency: 4
"""
EXPECTED = [
    (4, "accounts[0] (prod).regions[0]", "unknown aliyun region 'cn-shanghia'", "'cn-shanghai'"),
    (5, "accounts[0] (prod).site", "applies to provider tencent only, not aliyun", ""),
    (6, "accounts[0] (prod).rate_limt", "unknown key 'rate_limt'", "'rate_limit'"),
    (8, "accounts[0] (prod).collectors.sas_images.interval", "1ms is under the floor of 1s", ""),
    (9, "accounts[0] (prod).collectors.sas_image", "unknown collector 'sas_image'", "'sas_images'"),
    (12, "accounts[1] (tc).regions[0]", "unknown tencent region 'ap-guangzho'", "'ap-guangzhou'"),
    (13, "accounts[1] (tc).credentials", "secret_id is set but credentials.secret_key", ""),
    (16, "accounts[2] (tc2).provider", "must be one of 'aliyun' or 'tencent'", "'tencent'"),
    (18, "accounts[2] (tc2).regions", "duplicate key 'regions' (first at line 17)", ""),
    (20, "collectors.tcss_images.enabled", "must be true or false, not 'maybe'", ""),
    (22, "refresh.timeout", "'10 minutes' is not a duration", ""),
    (23, "refresh.concurency", "unknown key 'concurency'", "'concurrency'"),
]


def test_check_config_reports_every_mistake_in_one_run_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, MISTAKES)
    env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIreal", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s3cret-1"}
    result = run_cli(
        "--check-config", "--config.file", str(path), "--web.telemetry-path", "m", env=env
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    want = [f"config error: {path}:{n}: {where}: " for n, where, _, _ in EXPECTED]
    want.append("config error: --web.telemetry-path: ")
    assert [line[: len(prefix)] for line, prefix in zip(lines, want, strict=True)] == want
    for line, (_, _, words, guess) in zip(lines, EXPECTED, strict=False):
        assert words in line, line
        assert (f"did you mean {guess}?" in line) if guess else ("did you mean" not in line)
    assert "must be a path starting with '/'" in lines[-1]
    # The 1h30m on line 20 is valid Prometheus syntax: no complaint about it.
    assert not any("interval" in line for line in lines if ":20:" in line)


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90", 90),
        (90, 90),
        ("1.5m", 90),
        ("30s", 30),
        ("1h30m", 5400),
        ("1d", 86400),
        ("2w", 1_209_600),
        ("1h0m10s", 3610),
        ("500ms", 0.5),
    ],
)
def test_durations_take_seconds_and_prometheus_syntax(text: object, seconds: float) -> None:
    from exporter.config import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1h 30m", "30m1h", "1.5h30m", "soon", "-5s", True])
def test_bad_durations_are_refused(text: object) -> None:
    from exporter.config import parse_duration

    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_interval_floor_and_unknown_region_escape_hatch() -> None:
    account = {"name": "a", "provider": "tencent", "regions": ["ap-mars-1"]}
    (unknown,) = problems({"accounts": [account]})
    assert "unknown tencent region 'ap-mars-1'" in unknown and "allow_unknown_regions" in unknown
    config = parse_config({"accounts": [{**account, "allow_unknown_regions": True}]})
    assert config.accounts[0].regions == ["ap-mars-1"]
    slow = {**account, "allow_unknown_regions": True}
    (floor,) = problems(
        {"accounts": [{**slow, "collectors": {"tcss_images": {"interval": "0.9"}}}]}
    )
    assert "900ms is under the floor of 1s" in floor
    config = parse_config(
        {"accounts": [{**slow, "collectors": {"tcss_images": {"interval": "1s"}}}]}
    )
    assert config.collector(config.accounts[0], "tcss_images") == (True, 1)


def test_site_applies_to_tencent_only_and_is_honoured_there() -> None:
    (problem,) = problems(
        {
            "accounts": [
                {"name": "a", "provider": "aliyun", "regions": ["cn-shanghai"], "site": "china"}
            ]
        }
    )
    assert "'site' applies to provider tencent only, not aliyun" in problem
    config = parse_config(
        {
            "accounts": [
                {
                    "name": "a",
                    "provider": "tencent",
                    "regions": ["ap-singapore"],
                    "site": "international",
                }
            ]
        }
    )
    assert config.accounts[0].site == "international"


def test_half_a_key_names_the_missing_half(tmp_path: Path) -> None:
    from exporter.config import inspect_file

    path = write(tmp_path, "accounts:\n  - {name: t, provider: tencent, regions: [ap-guangzhou]}\n")
    found = inspect_file(path, {"TENCENTCLOUD_SECRET_ID": "AKIDreal"})
    (problem,) = found.problems
    assert str(problem) == (
        f"{path}:2: accounts[0] (t).credentials: "
        "TENCENTCLOUD_SECRET_ID is set but TENCENTCLOUD_SECRET_KEY is not"
    )
