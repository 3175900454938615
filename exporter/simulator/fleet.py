"""The simulated fleet: images and their findings, a pure function of (seed, time, overrides)."""

from __future__ import annotations

import functools
import hashlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Cloud = Literal["aliyun", "tencent"]
ImageKind = Literal["normal", "never", "failing"]
Phase = Literal["never", "scanning", "done", "failed"]

# Sas serves two sites: everything in mainland China (and cn-hongkong) from tds.cn-shanghai,
# everything else from tds.ap-southeast-1 (cloud-api-facts.md 1d).
ALIYUN_SITE_CHINA = "cn-shanghai"
ALIYUN_SITE_INTL = "ap-southeast-1"
ALIYUN_INTL_REGIONS = frozenset(
    {
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "ap-southeast-5",
        "ap-southeast-6",
        "ap-southeast-7",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-south-1",
        "us-east-1",
        "us-west-1",
        "eu-central-1",
        "eu-west-1",
        "me-east-1",
        "me-central-1",
    }
)
# The registry regions an image of each site lives in (the image's own RegionId field).
ALIYUN_REGISTRY_REGIONS: dict[str, tuple[str, ...]] = {
    ALIYUN_SITE_CHINA: ("cn-hangzhou", "cn-shanghai", "cn-beijing", "cn-shenzhen"),
    ALIYUN_SITE_INTL: ("ap-southeast-1", "eu-central-1", "us-east-1"),
}
TENCENT_REGIONS = frozenset(
    {
        "ap-guangzhou",
        "ap-shanghai",
        "ap-beijing",
        "ap-chengdu",
        "ap-chongqing",
        "ap-nanjing",
        "ap-hongkong",
        "ap-singapore",
        "ap-bangkok",
        "ap-jakarta",
        "ap-seoul",
        "ap-tokyo",
        "ap-mumbai",
        "na-siliconvalley",
        "na-ashburn",
        "eu-frankfurt",
        "sa-saopaulo",
    }
)

# The regions the demo configures, one per Sas site and two TCSS regions.
DEMO_ALIYUN_REGIONS = (ALIYUN_SITE_CHINA, ALIYUN_SITE_INTL)
DEMO_TENCENT_REGIONS = ("ap-guangzhou", "ap-singapore")

# Image creation times are spread over the year before this fixed instant (2023-01-01 UTC).
_CREATED_ANCHOR_MS = 1_672_531_200_000
# A normal image is rescanned every 10-40 minutes; a scan takes 1-5 minutes.
_PERIOD_RANGE_S = (600, 2400)
_DURATION_RANGE_S = (60, 300)

# Sas ScaStatus stages a running scan passes through, with the progress at which each begins.
SAS_SCAN_STAGES: tuple[tuple[int, str], ...] = (
    (0, "START"),
    (5, "MESSAGE_SEND"),
    (10, "START_RUN"),
    (15, "DOWNLOAD"),
    (30, "PRE_ANALYZER"),
    (40, "PRE_ANALYZER_SUCCESS"),
    (45, "WEB_SHELL_ANALYZER"),
    (60, "CVE_ANALYZER"),
    (80, "BIN_ANALYZER"),
    (90, "OTHER_ANALYZER"),
)


@dataclass(frozen=True, slots=True)
class _Repo:
    namespace: str
    name: str
    tags: tuple[str, ...]
    os_name: str
    size_mb: int
    vuln_mean: int


_CATALOGUE: tuple[_Repo, ...] = (
    _Repo("shop", "cart", ("1.4.0", "1.4.1", "1.4.2", "1.5.0", "latest"), "debian:12.5", 180, 30),
    _Repo("shop", "checkout", ("2.0.3", "2.1.0", "2.1.1", "latest"), "alpine:3.19.1", 90, 8),
    _Repo("shop", "catalog", ("0.9.7", "1.0.0", "1.0.1"), "ubuntu:22.04", 240, 55),
    _Repo("shop", "payments", ("3.2.0", "3.2.1", "3.3.0"), "debian:12.5", 60, 4),
    _Repo("shop", "frontend", ("5.12.0", "5.13.0", "5.13.1", "latest"), "alpine:3.18.6", 140, 12),
    _Repo("infra", "nginx", ("1.24.0", "1.25.3", "1.25.4", "1.27.0"), "debian:12.5", 70, 25),
    _Repo("infra", "envoy", ("1.28.0", "1.29.1", "1.30.2"), "ubuntu:22.04", 110, 18),
    _Repo("infra", "coredns", ("1.10.1", "1.11.1"), "debian:11.9", 50, 6),
    _Repo("infra", "fluent-bit", ("2.2.0", "3.0.4"), "debian:12.5", 95, 14),
    _Repo("data", "kafka", ("3.5.1", "3.6.0", "3.7.0"), "ubuntu:22.04", 620, 70),
    _Repo("data", "redis", ("6.2.14", "7.0.15", "7.2.4"), "debian:12.5", 120, 20),
    _Repo("data", "postgres", ("14.10", "15.5", "16.1"), "debian:12.5", 410, 40),
    _Repo("data", "elasticsearch", ("7.17.18", "8.12.0"), "ubuntu:20.04", 1300, 90),
    _Repo("ml", "inference", ("0.3.0", "0.4.0", "0.4.1"), "ubuntu:22.04", 3900, 120),
    _Repo("ml", "trainer", ("2024.01", "2024.03"), "ubuntu:20.04", 5200, 150),
    _Repo("platform", "auth", ("1.0.0", "1.1.0", "1.2.0"), "alpine:3.19.1", 45, 3),
    _Repo("platform", "gateway", ("0.8.2", "0.9.0"), "alpine:3.19.1", 80, 9),
    _Repo("platform", "billing", ("4.1.0", "4.2.0"), "centos:7.9.2009", 520, 110),
    _Repo("library", "nginx", ("1.25", "1.26", "alpine"), "debian:12.5", 190, 35),
    _Repo("library", "redis", ("7.2", "7.2-alpine"), "debian:12.5", 140, 22),
    _Repo("library", "python", ("3.11-slim", "3.12-slim"), "debian:12.5", 130, 28),
    _Repo("library", "centos", ("7", "latest"), "centos:7.9.2009", 230, 160),
)

_PACKAGES: dict[str, tuple[str, ...]] = {
    "debian": ("libc6", "openssl", "libssl3", "zlib1g", "curl", "libexpat1", "perl-base", "tar"),
    "ubuntu": ("libc6", "openssl", "libssl3", "libsqlite3-0", "curl", "git", "python3.10", "vim"),
    "alpine": ("musl", "busybox", "libcrypto3", "libssl3", "zlib", "apk-tools", "curl"),
    "centos": ("glibc", "openssl-libs", "bash", "sudo", "nss", "curl", "python-libs", "systemd"),
}

_BASELINES: tuple[tuple[str, str, str], ...] = (
    ("identification", "Identity authentication", "identification"),
    ("ak_leak", "AccessKey leak detection", "sensitive_info"),
    ("weak_password", "Weak password", "weak_password"),
    ("config_security", "Insecure service configuration", "config"),
    ("sshd_config", "SSH daemon configuration", "config"),
    ("container_runtime", "Container runtime hardening", "runtime"),
)

_MALWARE_PATHS = (
    "/usr/local/bin/kdevtmpfsi",
    "/tmp/.x/xmrig",
    "/var/www/html/shell.php",
    "/root/.ssh/.backdoor.sh",
    "/usr/lib/libprocesshider.so",
    "/opt/app/node_modules/.bin/miner",
)

_SCAN_ERRORS = (
    ("FAIL", "download image layer failed: registry unreachable"),
    ("TIMEOUT", "image scan timed out after 1800s"),
)


def _hex(*parts: object) -> str:
    """Return a 64-digit hex id derived from ``parts``."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def _rng(*parts: object) -> random.Random:
    # str seeds are hashed with SHA-512 by random.seed (version 2): stable across processes.
    return random.Random("|".join(map(str, parts)))


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """The static identity of one simulated image (never changes for a given seed)."""

    cloud: Cloud
    site: str  # Sas: the API site (cn-shanghai | ap-southeast-1); TCSS: the region
    index: int
    namespace: str
    repo: str
    tag: str
    registry_region: str
    uuid: str  # Sas Uuid / ImageUuid
    image_hex: str  # Sas ImageId; TCSS ImageID is "sha256:" + this
    digest_hex: str
    repo_id: str
    instance_id: str
    size_bytes: int
    created_ms: int
    updated_ms: int
    os_name: str
    registry_type: str
    repo_type: str
    deployed: bool
    kind: ImageKind
    period_s: int
    phase_s: int
    vuln_mean: int
    host_cnt: int
    container_cnt: int
    super_node_cnt: int

    @property
    def key(self) -> str:
        """The provider's image key: Sas Uuid, TCSS ImageID."""
        return self.uuid if self.cloud == "aliyun" else f"sha256:{self.image_hex}"

    @property
    def tcss_image_name(self) -> str:
        """TCSS ImageName: ``registry/namespace/repo:tag``."""
        if self.namespace == "library":
            return f"docker.io/library/{self.repo}:{self.tag}"
        return f"ccr.ccs.tencentyun.com/{self.namespace}/{self.repo}:{self.tag}"

    @property
    def sas_image_name(self) -> str:
        """Sas Image: ``registry.<region>.aliyuncs.com/namespace/repo:tag``."""
        return f"{self.registry_host}/{self.namespace}/{self.repo}:{self.tag}"

    @property
    def registry_host(self) -> str:
        """The public registry host of the image."""
        return f"registry.{self.registry_region}.aliyuncs.com"


@dataclass(frozen=True, slots=True)
class VulFinding:
    """One vulnerability record (a CVE in a package)."""

    cve: str
    package: str
    version: str
    fixed_version: str
    necessity: Literal["asap", "later", "nntf"]
    first_seen_ms: int
    layer: str


@dataclass(frozen=True, slots=True)
class BaselineFinding:
    """One baseline check category with its risk items by severity."""

    key: str
    alias: str
    class_alias: str
    item_count: int
    high: int
    middle: int
    low: int

    @property
    def level(self) -> str:
        """The worst severity present (``low`` when none)."""
        return "high" if self.high else "medium" if self.middle else "low"

    @property
    def risk_items(self) -> int:
        """High + middle + low risk items."""
        return self.high + self.middle + self.low


@dataclass(frozen=True, slots=True)
class MalwareFinding:
    """One malicious file in the image."""

    md5: str
    path: str
    level: Literal["serious", "suspicious", "remind"]
    status: int  # 0 unhandled, 1 handled, 2 verifying, 3 whitelisted
    layer: str
    first_seen_ms: int


@dataclass(frozen=True, slots=True)
class Findings:
    """The results of one successful scan."""

    vul_count: int = 0  # Sas VulCount; the records come from Fleet.vulns()
    baseline: tuple[BaselineFinding, ...] = ()
    malware: tuple[MalwareFinding, ...] = ()
    critical: int = 0
    high: int = 0
    medium: int = 0
    low: int = 0
    risk_cnt: int = 0
    sensitive_cnt: int = 0
    component_cnt: int = 0

    @property
    def hc_count(self) -> int:
        """Sas HcCount: the sum of baseline risk items over every category."""
        return sum(b.risk_items for b in self.baseline)

    @property
    def tcss_vul_cnt(self) -> int:
        """TCSS VulCnt: the sum of the per-severity counts."""
        return self.critical + self.high + self.medium + self.low


EMPTY_FINDINGS = Findings()


@dataclass(frozen=True, slots=True)
class ImageState:
    """What the scanner reports about one image at one instant."""

    spec: ImageSpec
    phase: Phase
    progress: int  # 0..100
    sca_status: str  # Sas ScaStatus
    scan_error: str  # "" unless failed
    last_scan_ms: int  # end of the latest finished scan (success or failure); 0 if none
    remain_s: int  # seconds left in a running scan
    findings: Findings
    generation: str  # identifies the scan whose findings are shown

    @property
    def tcss_scan_status(self) -> str:
        """TCSS list ScanStatus: notScan | scanning | scanned | scanErr."""
        return {"never": "notScan", "scanning": "scanning", "done": "scanned", "failed": "scanErr"}[
            self.phase
        ]


@dataclass(slots=True)
class _Rescan:
    at: float
    counter: int
    vulns: int  # the new vulnerability total (always differs from the one before)


@dataclass(slots=True)
class _Overrides:
    rescans: dict[tuple[str, str], _Rescan] = field(default_factory=dict)
    removed: set[tuple[str, str]] = field(default_factory=set)
    counter: int = 0


class Fleet:
    """Deterministic synthetic images for both clouds.

    Identity (repos, tags, ids, sizes) is a function of ``seed``; scan state is a function of
    ``seed`` and the time passed in; the only mutable state is the control-plane overrides
    (:meth:`rescan`, :meth:`remove`).

    Time is an input: ``clock`` (Unix seconds) is the fleet's own clock, read by :meth:`now`
    and :meth:`rescan` only; the simulated APIs ask it for the instant they render. It is
    separate from the clock that signs and verifies requests, so a test can pin the fleet's
    instant while the official SDKs sign with the real time.

    Every normal image is rescanned on its own schedule (every 10-40 minutes, each scan lasting
    1-5 minutes; while running it shows the previous results), so at any instant a share of the
    fleet is mid-scan and every few minutes some images get new counts. About one image in
    twelve per site was never scanned (Sas INIT, TCSS notScan) and one in twelve fails every scan
    (Sas FAIL/TIMEOUT, TCSS scanErr).
    """

    def __init__(
        self,
        *,
        seed: int = 1,
        images_per_region: int = 24,
        clock: Callable[[], float] = time.time,
        state_cache: float = 0.0,
    ) -> None:
        if images_per_region < 0:
            raise ValueError("images_per_region must be >= 0")
        # Cheap mode for big fleets (bench/): scan state is evaluated at the start of each
        # ``state_cache``-second cycle and a site's list of states is computed once per cycle.
        self.state_cache = state_cache
        self._states: dict[tuple[str, str], tuple[tuple[float, int, int], list[ImageState]]] = {}
        self.seed = seed
        self.images_per_region = images_per_region
        self._clock = clock
        self._lock = threading.Lock()
        self._sites: dict[tuple[str, str], tuple[ImageSpec, ...]] = {}
        self._by_key: dict[tuple[str, str], ImageSpec] = {}
        self._overrides = _Overrides()
        self._findings = functools.lru_cache(maxsize=65536)(self._compute_findings)
        self._pool = functools.lru_cache(maxsize=65536)(self._compute_pool)

    def now(self) -> float:
        """The fleet's current instant (Unix seconds) from its injected clock."""
        return self._clock()

    # -- identity -----------------------------------------------------------------------

    @staticmethod
    def aliyun_site(region_id: str | None) -> str:
        """Map a Sas RegionId parameter to its site (China unless an international region)."""
        return ALIYUN_SITE_INTL if region_id in ALIYUN_INTL_REGIONS else ALIYUN_SITE_CHINA

    def specs(self, cloud: Cloud, site: str) -> tuple[ImageSpec, ...]:
        """Return every image of ``site`` (removed ones included), generating them on first use."""
        with self._lock:
            cached = self._sites.get((cloud, site))
            if cached is None:
                cached = self._generate(cloud, site)
                self._sites[(cloud, site)] = cached
                for spec in cached:
                    self._by_key[(cloud, spec.key)] = spec
            return cached

    def images(self, cloud: Cloud, site: str) -> list[ImageSpec]:
        """Return the images of ``site`` still present (not removed)."""
        removed = self._overrides.removed
        return [s for s in self.specs(cloud, site) if (cloud, s.key) not in removed]

    def find(self, cloud: Cloud, key: str) -> ImageSpec | None:
        """Look up a present image by its key (Sas Uuid, TCSS ImageID) in any generated site."""
        with self._lock:
            spec = self._by_key.get((cloud, key))
            if spec is None or (cloud, key) in self._overrides.removed:
                return None
            return spec

    def _generate(self, cloud: Cloud, site: str) -> tuple[ImageSpec, ...]:
        n = self.images_per_region
        rng = _rng(self.seed, cloud, site, "layout")
        pairs = [(repo, tag) for repo in _CATALOGUE for tag in repo.tags]
        rng.shuffle(pairs)
        while len(pairs) < n:  # big fleets: synthetic build tags
            repo = _CATALOGUE[len(pairs) % len(_CATALOGUE)]
            pairs.append((repo, f"build-{len(pairs)}"))
        pairs = pairs[:n]
        special = max(1, round(n / 12)) if n >= 4 else 0
        order = list(range(n))
        rng.shuffle(order)
        kinds: dict[int, ImageKind] = {}
        for i in order[:special]:
            kinds[i] = "never"
        for i in order[special : 2 * special]:
            kinds[i] = "failing"
        regions = ALIYUN_REGISTRY_REGIONS.get(site, (site,)) if cloud == "aliyun" else (site,)
        return tuple(
            self._spec(cloud, site, i, repo, tag, regions, kinds.get(i, "normal"))
            for i, (repo, tag) in enumerate(pairs)
        )

    def _spec(
        self,
        cloud: Cloud,
        site: str,
        index: int,
        repo: _Repo,
        tag: str,
        regions: Sequence[str],
        kind: ImageKind,
    ) -> ImageSpec:
        ident = (self.seed, cloud, site, repo.namespace, repo.name, tag)
        rng = _rng(*ident, "spec")
        created = _CREATED_ANCHOR_MS - rng.randrange(0, 400 * 86_400_000)
        period = rng.randrange(*_PERIOD_RANGE_S)
        library = repo.namespace == "library"
        deployed = rng.random() < 0.7
        containers = rng.randrange(1, 40) if deployed else 0
        return ImageSpec(
            cloud=cloud,
            site=site,
            index=index,
            namespace=repo.namespace,
            repo=repo.name,
            tag=tag,
            registry_region=regions[rng.randrange(len(regions))],
            uuid=str(uuid.UUID(_hex(*ident, "uuid")[:32], version=4)),
            image_hex=_hex(*ident, "image"),
            digest_hex=_hex(*ident, "digest"),
            repo_id=("crr-" if cloud == "aliyun" else "") + _hex(*ident[:5], "repo")[:16],
            instance_id=("cri-" if cloud == "aliyun" else "tcr-") + _hex(site, "inst")[:12],
            size_bytes=int(repo.size_mb * 1_048_576 * rng.uniform(0.85, 1.15)),
            created_ms=created,
            updated_ms=created + rng.randrange(0, 30 * 86_400_000),
            os_name=repo.os_name,
            registry_type="harbor" if library else "acr",
            repo_type="public" if library else "private",
            deployed=deployed,
            kind=kind,
            period_s=period,
            phase_s=rng.randrange(period),
            vuln_mean=repo.vuln_mean,
            host_cnt=rng.randrange(1, 12) if deployed else 0,
            container_cnt=containers,
            super_node_cnt=rng.randrange(0, 2) if deployed else 0,
        )

    # -- scan state ---------------------------------------------------------------------

    def states(self, cloud: Cloud, site: str, now: float) -> list[ImageState]:
        """The states of the present images of ``site`` at ``now`` (cached per cycle in cheap
        mode, so walking a big fleet page by page does not recompute it for every page)."""
        if not self.state_cache:
            return [self.state(spec, now) for spec in self.images(cloud, site)]
        stamp = (
            now - now % self.state_cache,
            self._overrides.counter,
            len(self._overrides.removed),
        )
        cached = self._states.get((cloud, site))
        if cached is None or cached[0] != stamp:
            cached = (stamp, [self.state(spec, now) for spec in self.images(cloud, site)])
            self._states[(cloud, site)] = cached
        return cached[1]

    def state(self, spec: ImageSpec, now: float) -> ImageState:
        """Return what the scanner reports about ``spec`` at ``now`` (Unix seconds)."""
        if self.state_cache:
            now -= now % self.state_cache
        if spec.kind == "never":
            return ImageState(spec, "never", 0, "INIT", "", 0, 0, EMPTY_FINDINGS, "none")
        k = int((now - spec.phase_s) // spec.period_s)
        start = spec.phase_s + k * spec.period_s
        duration = self._duration(spec, k)
        running = now - start < duration
        override = self._overrides.rescans.get((spec.cloud, spec.key))
        if override is not None and override.at >= start:
            return self._manual_state(spec, override)
        if running:
            prev_gen = k - 1
            prev = self._finished(spec, prev_gen, override, start)
            fraction = (now - start) / duration
            progress = min(99, int(fraction * 100))
            stage = next(s for p, s in reversed(SAS_SCAN_STAGES) if progress >= p)
            return ImageState(
                spec,
                "scanning",
                progress,
                stage,
                "",
                prev.last_scan_ms,
                max(1, int(duration - (now - start))),
                prev.findings,
                prev.generation,
            )
        return self._finished(spec, k, None, start + duration)

    def _finished(
        self, spec: ImageSpec, k: int, override: _Rescan | None, before: float
    ) -> ImageState:
        """State after periodic scan ``k`` ended (or the manual rescan, if more recent)."""
        start = spec.phase_s + k * spec.period_s
        end = start + self._duration(spec, k)
        if override is not None and override.at >= start and override.at <= before:
            return self._manual_state(spec, override)
        end_ms = int(end * 1000)
        if spec.kind == "failing":
            status, message = _SCAN_ERRORS[k % len(_SCAN_ERRORS)]
            progress = 15 if status == "FAIL" else 60
            return ImageState(
                spec, "failed", progress, status, message, end_ms, 0, EMPTY_FINDINGS, f"p{k}"
            )
        findings = self._findings(spec, f"p{k}", None)
        return ImageState(spec, "done", 100, "SUCCESS", "", end_ms, 0, findings, f"p{k}")

    def _manual_state(self, spec: ImageSpec, override: _Rescan) -> ImageState:
        gen = f"m{override.counter}"
        findings = self._findings(spec, gen, override.vulns)
        at_ms = int(override.at * 1000)
        return ImageState(spec, "done", 100, "SUCCESS", "", at_ms, 0, findings, gen)

    def _duration(self, spec: ImageSpec, k: int) -> int:
        return _rng(self.seed, spec.uuid, k, "duration").randrange(*_DURATION_RANGE_S)

    def _compute_findings(self, spec: ImageSpec, generation: str, n_vulns: int | None) -> Findings:
        rng = _rng(self.seed, spec.uuid, generation, "findings")
        if n_vulns is None:
            n_vulns = max(0, round(rng.gauss(spec.vuln_mean, spec.vuln_mean * 0.15 + 1)))
        return Findings(
            vul_count=n_vulns,
            baseline=self._baseline(spec, rng),
            malware=self._malware(spec, rng),
            critical=(crit := sum(1 for _ in range(n_vulns) if rng.random() < 0.06)),
            high=(high := sum(1 for _ in range(n_vulns - crit) if rng.random() < 0.2)),
            medium=(med := sum(1 for _ in range(n_vulns - crit - high) if rng.random() < 0.5)),
            low=n_vulns - crit - high - med,
            risk_cnt=rng.randrange(0, 6),
            sensitive_cnt=rng.randrange(0, 4),
            component_cnt=rng.randrange(40, 400),
        )

    def vulns(self, state: ImageState) -> tuple[VulFinding, ...]:
        """The vulnerability records behind ``state.findings.vul_count``.

        Each image has a stable pool of CVEs of which the first ``vul_count`` are present, so a
        rescan that finds more or fewer keeps the names of the others.
        """
        return self._pool(state.spec, state.findings.vul_count)

    def _compute_pool(self, spec: ImageSpec, size: int) -> tuple[VulFinding, ...]:
        # Record i depends on (seed, image, i) only: every pool is a prefix of a longer one.
        family = spec.os_name.split(":", 1)[0]
        packages = _PACKAGES.get(family, _PACKAGES["debian"])
        layers = [_hex(spec.image_hex, "layer", i) for i in range(4)]
        out: list[VulFinding] = []
        for i in range(size):
            # One hash per record (much cheaper than a seeded Random for big fleets).
            x = int.from_bytes(hashlib.sha256(f"{self.seed}|{spec.uuid}|v|{i}".encode()).digest())
            x, pick = divmod(x, 100)
            necessity: Literal["asap", "later", "nntf"] = (
                "asap" if pick < 15 else "later" if pick < 50 else "nntf"
            )
            x, year = divmod(x, 6)
            x, number = divmod(x, 51000)
            x, package = divmod(x, len(packages))
            x, major = divmod(x, 3)
            x, minor = divmod(x, 20)
            x, patch = divmod(x, 9)
            x, fixed = divmod(x, 10)
            x, seen = divmod(x, 86_400_000 * 30)
            x, layer = divmod(x, 4)
            out.append(
                VulFinding(
                    cve=f"CVE-{2019 + year}-{1000 + number}",
                    package=packages[package],
                    version=f"{major + 1}.{minor}.{patch}",
                    fixed_version=f"{major + 1}.{20 + fixed}.0",
                    necessity=necessity,
                    first_seen_ms=spec.created_ms + seen,
                    layer=layers[layer],
                )
            )
        return tuple(out)

    @staticmethod
    def _baseline(spec: ImageSpec, rng: random.Random) -> tuple[BaselineFinding, ...]:
        chosen = rng.sample(_BASELINES, rng.randrange(1, 5))
        out = []
        for key, alias, class_alias in chosen:
            high, middle, low = rng.randrange(0, 3), rng.randrange(0, 4), rng.randrange(0, 6)
            out.append(
                BaselineFinding(
                    key=key,
                    alias=alias,
                    class_alias=class_alias,
                    item_count=high + middle + low + rng.randrange(3, 12),
                    high=high,
                    middle=middle,
                    low=low,
                )
            )
        return tuple(out)

    def _malware(self, spec: ImageSpec, rng: random.Random) -> tuple[MalwareFinding, ...]:
        if rng.random() >= 0.25:
            return ()
        out = []
        for i in range(rng.randrange(1, 4)):
            r = _rng(self.seed, spec.uuid, "malware", i)
            out.append(
                MalwareFinding(
                    md5=_hex(spec.uuid, "md5", i)[:32],
                    path=_MALWARE_PATHS[r.randrange(len(_MALWARE_PATHS))],
                    level=r.choice(("serious", "suspicious", "remind")),
                    status=rng.choices((0, 1, 2, 3), weights=(70, 15, 5, 10))[0],
                    layer=_hex(spec.image_hex, "layer", r.randrange(4))[:64],
                    first_seen_ms=spec.created_ms + r.randrange(0, 86_400_000 * 60),
                )
            )
        return tuple(out)

    # -- control-plane overrides --------------------------------------------------------

    def rescan(self, cloud: Cloud, count: int, *, site: str | None = None) -> list[str]:
        """Finish a fresh scan of exactly ``count`` scanned images now, changing their counts.

        Picks images currently in the ``done`` phase (never-scanned, failing and running
        images are skipped), deterministically for a given seed and call order. Returns their
        keys (Sas Uuid, TCSS ImageID). Raises ValueError when fewer are eligible.
        """
        now = self.now()
        sites = [site] if site is not None else self._all_sites(cloud)
        eligible = [
            spec
            for s in sites
            for spec in self.images(cloud, s)
            if self.state(spec, now).phase == "done"
        ]
        if count > len(eligible):
            raise ValueError(f"only {len(eligible)} {cloud} images can be rescanned, not {count}")
        with self._lock:
            self._overrides.counter += 1
            counter = self._overrides.counter
            eligible.sort(key=lambda s: _hex(self.seed, counter, s.uuid))
            chosen = eligible[:count]
            for spec in chosen:
                before = self.state(spec, now).findings.vul_count
                delta = _rng(self.seed, spec.uuid, counter, "delta").choice((-3, -2, -1, 1, 2, 3))
                after = before + delta if before + delta >= 0 else before + abs(delta)
                self._overrides.rescans[(cloud, spec.key)] = _Rescan(now, counter, after)
        return [spec.key for spec in chosen]

    def remove(self, cloud: Cloud, key: str) -> bool:
        """Make an image vanish (from lists and details alike); False if it was unknown."""
        spec = self.find(cloud, key)
        if spec is None:
            return False
        with self._lock:
            self._overrides.removed.add((cloud, key))
        return True

    def reset(self) -> None:
        """Forget every rescan and removal."""
        with self._lock:
            self._overrides = _Overrides()

    def _all_sites(self, cloud: Cloud) -> list[str]:
        with self._lock:
            sites = [site for (c, site) in self._sites if c == cloud]
        if not sites:
            sites = list(DEMO_ALIYUN_REGIONS if cloud == "aliyun" else DEMO_TENCENT_REGIONS)
        return sites
