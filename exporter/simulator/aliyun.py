"""Simulated Alibaba Cloud Security Center (Sas, API 2018-12-03): auth, actions, errors.

Protocol, as the real gateway (cloud-api-facts.md 1a-1d):

- ``POST`` or ``GET`` on ``/``. The action comes from ``x-acs-action`` (V3) or the ``Action``
  parameter (V1); business parameters from the query string and a form body alike (the
  official SDK sends POST with every parameter in the query and an empty body).
- ACS3-HMAC-SHA256 is verified by rebuilding the canonical request from the received
  ``SignedHeaders`` list and query; ``x-acs-content-sha256`` must hash the body; ``x-acs-date``
  must be within 15 minutes of the simulator clock; a nonce may be used once per 15 minutes.
  HMAC-SHA1 query signatures (``SignatureVersion=1.0``) are verified over every parameter but
  ``Signature``, empty ones included. A security token (``x-acs-security-token`` or
  ``SecurityToken``) is accepted with any long-lived key; an STS key (issued by the simulated
  STS or instance metadata) needs its own token and is refused once expired
  (``InvalidSecurityToken.Expired``).
- Errors are ``{"RequestId","HostId","Code","Message","Recommend"}`` with content type
  ``application/json;charset=utf-8`` and the gateway's HTTP status.
- Flow control: a token bucket of 10 requests per second per (AccessKey id, site, action); the
  excess gets HTTP 400 ``Throttling.User``. The documented default Sas quota is 10/s per
  (regionId, API, account); the two sites are separate endpoints, hence separate buckets.
- ``RegionId`` (if sent) selects the site: international regions (ap-southeast-1, eu-central-1,
  ...) get the ``ap-southeast-1`` site's images, anything else the China site's. Without it,
  a ``Host`` of ``tds.ap-southeast-1.aliyuncs.com`` selects the international site.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from exporter.clouds.aliyun.signing import (
    canonical_request_v3,
    parse_authorization_v3,
    signature_v1,
    signature_v3,
)
from exporter.simulator.core import (
    NonceCache,
    PageSpec,
    SimRequest,
    SimResponse,
    TokenBucket,
    html_error_page,
    mutate_payload,
    page_slice,
    truncated,
)
from exporter.simulator.faults import REPLACING_KINDS, Fault
from exporter.simulator.fleet import (
    ALIYUN_SITE_INTL,
    Fleet,
    ImageSpec,
    ImageState,
    MalwareFinding,
    VulFinding,
)
from exporter.simulator.identity import TemporaryKeyError

if TYPE_CHECKING:
    from exporter.simulator.core import Simulator

logger = logging.getLogger(__name__)

T = TypeVar("T")

API_VERSION = "2018-12-03"
CONTENT_TYPE = "application/json;charset=utf-8"
RATE_PER_SECOND = 10.0
MAX_SKEW_SECONDS = 15 * 60

PAGINATION: dict[str, PageSpec] = {
    "DescribeImageInstances": PageSpec(
        "page", "ImageInstanceList", "PageSize", "CurrentPage", 20, 100, ("PageInfo", "TotalCount")
    ),
    "DescribeImageBaselineCheckResult": PageSpec(
        "page", "BaselineResult", "PageSize", "CurrentPage", 20, 100, ("PageInfo", "TotalCount")
    ),
    "ListImageRisk": PageSpec(
        "page", "ImageRiskList", "PageSize", "CurrentPage", 20, 100, ("PageInfo", "TotalCount")
    ),
    "DescribeAffectedMaliciousFileImages": PageSpec(
        "page",
        "AffectedMaliciousFileImagesResponse",
        "PageSize",
        "CurrentPage",
        20,
        100,
        ("PageInfo", "TotalCount"),
    ),
    "DescribeImageVulList": PageSpec(
        "page", "VulRecords", "PageSize", "CurrentPage", 10, 100, ("TotalCount",)
    ),
}

# Parameters of the protocol itself, not of the action.
_COMMON_PARAMS = frozenset(
    {
        "Action",
        "Version",
        "Format",
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "SignatureType",
        "Timestamp",
        "SecurityToken",
        "RegionId",
    }
)
_V1_REQUIRED = (
    "AccessKeyId",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
    "Version",
)
_V3_REQUIRED_SIGNED = (
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
)
_VUL_TYPES = frozenset({"cve", "sys", "cms", "app", "emg", "sca"})


class SasError(Exception):
    """A gateway or API error, rendered as the vendor's error body."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def _missing(name: str) -> SasError:
    return SasError(
        400,
        "MissingParameter",
        f'The input parameter "{name}" that is mandatory for processing this request '
        "is not supplied.",
    )


def _invalid(name: str, value: str) -> SasError:
    return SasError(
        400, "InvalidParameter", f'The specified parameter "{name}" ({value}) is invalid.'
    )


def _signature_mismatch(string_to_sign: str) -> SasError:
    return SasError(
        400,
        "SignatureDoesNotMatch",
        "Specified signature does not match our calculation. server string to sign is:"
        + string_to_sign,
    )


def _parse_acs_time(value: str) -> float:
    try:
        moment = datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise SasError(
            400,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        ) from None
    return moment.replace(tzinfo=datetime.UTC).timestamp()


def _ms_str(ms: int) -> str:
    return str(ms)


class AliyunService:
    """The Sas endpoint of one :class:`~exporter.simulator.core.Simulator`."""

    def __init__(self, simulator: Simulator) -> None:
        self.sim = simulator
        self.limiter = TokenBucket(RATE_PER_SECOND)
        self.nonces = NonceCache(MAX_SKEW_SECONDS)
        self._actions: dict[str, Callable[[dict[str, str], str, float], dict[str, Any]]] = {
            "DescribeImageInstances": self._describe_image_instances,
            "DescribeImageBaselineCheckResult": self._describe_image_baseline_check_result,
            "ListImageRisk": self._list_image_risk,
            "DescribeAffectedMaliciousFileImages": self._describe_affected_malicious_file_images,
            "DescribeImageVulList": self._describe_image_vul_list,
        }

    @property
    def fleet(self) -> Fleet:
        return self.sim.fleet

    def reset(self) -> None:
        """Forget nonces and refill the rate-limit buckets."""
        self.limiter.reset()
        self.nonces.reset()

    # -- request handling -------------------------------------------------------------------

    def handle(self, request: SimRequest) -> SimResponse:
        """Answer one Sas request."""
        request_id = str(uuid.uuid4()).upper()
        params: dict[str, str] = {}
        for name, value in [*request.query_pairs(), *request.form_pairs()]:
            params.setdefault(name, value)
        action = request.header("x-acs-action") or params.get("Action", "")
        # The endpoint decides the site, as on the real service: a listener bound to a site,
        # else the Host (tds.<site>.aliyuncs.com); a RegionId parameter only on a shared one.
        site = Fleet.aliyun_site(params.get("RegionId"))
        if request.site is not None:
            site = request.site
        elif "RegionId" not in params and (request.header("host") or "").startswith(
            f"tds.{ALIYUN_SITE_INTL}."
        ):
            site = ALIYUN_SITE_INTL
        self.sim.count("aliyun", action)
        fired = self.sim.faults.draw("aliyun", action)
        delay = sum(f.delay_seconds for f in fired if f.kind == "latency")
        replacing = next((f for f in fired if f.kind in REPLACING_KINDS), None)
        try:
            if replacing is not None:
                response = self._fault_response(replacing, request_id, site)
            else:
                payload = self._process(request, params, action, site)
                payload = {"RequestId": request_id, **payload}
                spec = PAGINATION.get(action)
                truncate = mutate_payload(payload, fired, spec.list_field if spec else None)
                response = SimResponse.of_json(200, payload, CONTENT_TYPE)
                if truncate:
                    response = truncated(response)
        except SasError as err:
            response = self._error(err, request_id, site)
        if response.headers.get("Content-Type") == CONTENT_TYPE:
            response.headers["x-acs-request-id"] = request_id
        response.delay = delay
        return response

    def _error(self, err: SasError, request_id: str, site: str) -> SimResponse:
        logger.debug("sas error code=%s status=%d", err.code, err.status)
        body = {
            "RequestId": request_id,
            "HostId": f"tds.{site}.aliyuncs.com",
            "Code": err.code,
            "Message": err.message,
            "Recommend": (
                f"https://api.aliyun.com/troubleshoot?q={err.code}&product=Sas"
                f"&requestId={request_id}"
            ),
        }
        return SimResponse.of_json(err.status, body, CONTENT_TYPE, err.headers)

    def _fault_response(self, fault: Fault, request_id: str, site: str) -> SimResponse:
        if fault.kind == "throttle":
            headers = {}
            if fault.retry_after_ms is not None:
                headers["x-acs-retry-after"] = str(fault.retry_after_ms)
            err = SasError(
                400, "Throttling.User", "Request was denied due to user flow control.", headers
            )
        elif fault.kind == "server_error":
            if fault.status == 503:
                err = SasError(
                    503,
                    "ServiceUnavailable",
                    "The request has failed due to a temporary failure of the server.",
                )
            else:
                err = SasError(
                    fault.status,
                    "InternalError",
                    "The request processing has failed due to some unknown error, "
                    "exception or failure.",
                )
        elif fault.kind == "html_error":
            return html_error_page(502)
        else:  # auth_failure
            code = fault.code or "SignatureDoesNotMatch"
            err = SasError(400, code, "Specified signature does not match our calculation.")
        return self._error(err, request_id, site)

    def _process(
        self, request: SimRequest, params: dict[str, str], action: str, site: str
    ) -> dict[str, Any]:
        if request.path not in ("/", ""):
            raise SasError(404, "InvalidAction.NotFound", "Specified api is not found.")
        if not action:
            raise _missing("Action")
        handler = self._actions.get(action)
        if handler is None:
            raise SasError(
                404,
                "InvalidAction.NotFound",
                f"Specified api is not found, please check your url and method. ({action})",
            )
        now = self.sim.clock()
        authorization = request.header("authorization")
        if authorization is not None and authorization.startswith("ACS3-"):
            access_key_id = self._verify_v3(request, authorization, now)
        elif "Signature" in params:
            access_key_id = self._verify_v1(request, params, now)
        elif authorization is not None:
            raise SasError(
                400,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards.",
            )
        else:
            raise _missing("AccessKeyId")
        if not self.limiter.allow((access_key_id, site, action), now):
            raise SasError(400, "Throttling.User", "Request was denied due to user flow control.")
        business = {k: v for k, v in params.items() if k not in _COMMON_PARAMS}
        return handler(business, site, self.fleet.now())

    def _secret(self, access_key_id: str, token: str | None, now: float) -> str:
        secret = self.sim.aliyun_keys.get(access_key_id)
        if secret is None:
            try:
                secret = self.sim.identity.secret("aliyun", access_key_id, token, now)
            except TemporaryKeyError as err:
                raise SasError(err.status, err.code, err.message) from None
        if secret is None:
            raise SasError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        return secret

    def _check_time(self, timestamp: str, now: float) -> None:
        if abs(_parse_acs_time(timestamp) - now) > MAX_SKEW_SECONDS:
            raise SasError(
                400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."
            )

    def _use_nonce(self, access_key_id: str, nonce: str, now: float) -> None:
        if not self.nonces.use((access_key_id, nonce), now):
            raise SasError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")

    def _verify_v3(
        self, request: SimRequest, authorization: str, now: float, version: str = API_VERSION
    ) -> str:
        try:
            access_key_id, signed, signature = parse_authorization_v3(authorization)
        except ValueError:
            raise SasError(
                400,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards.",
            ) from None
        headers = request.header_map()
        signed_set = {name.lower() for name in signed}
        for name in _V3_REQUIRED_SIGNED:
            if name not in headers:
                raise _missing(name)
            if name not in signed_set:
                raise SasError(
                    400,
                    "IncompleteSignature",
                    f"The request signature does not conform to Aliyun standards: "
                    f"{name} is not signed.",
                )
        if headers["x-acs-version"] != version:
            raise SasError(400, "InvalidVersion", "Specified parameter Version is not valid.")
        secret = self._secret(access_key_id, headers.get("x-acs-security-token"), now)
        self._check_time(headers["x-acs-date"], now)
        content_sha256 = headers["x-acs-content-sha256"]
        if content_sha256 != hashlib.sha256(request.body).hexdigest():
            raise SasError(
                400,
                "SignatureDoesNotMatch",
                "The x-acs-content-sha256 header does not match the request body.",
            )
        try:
            canonical = canonical_request_v3(
                request.method,
                request.path,
                request.query_pairs(),
                headers,
                signed,
                content_sha256,
            )
        except ValueError:
            raise SasError(
                400, "IncompleteSignature", "A signed header is missing from the request."
            ) from None
        expected = signature_v3(secret, canonical)
        if not hmac.compare_digest(expected, signature):
            digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
            raise _signature_mismatch(f"ACS3-HMAC-SHA256\n{digest}")
        self._use_nonce(access_key_id, headers["x-acs-signature-nonce"], now)
        return access_key_id

    def _verify_v1(
        self, request: SimRequest, params: dict[str, str], now: float, version: str = API_VERSION
    ) -> str:
        for name in _V1_REQUIRED:
            if not params.get(name):
                raise _missing(name)
        if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
            raise SasError(
                400,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards: "
                "SignatureMethod must be HMAC-SHA1 and SignatureVersion 1.0.",
            )
        if params["Version"] != version:
            raise SasError(400, "InvalidVersion", "Specified parameter Version is not valid.")
        access_key_id = params["AccessKeyId"]
        secret = self._secret(access_key_id, params.get("SecurityToken"), now)
        self._check_time(params["Timestamp"], now)
        expected = signature_v1(secret, request.method, params)
        if not hmac.compare_digest(expected.encode(), params["Signature"].encode()):
            raise _signature_mismatch("(HMAC-SHA1 over the canonicalized query)")
        self._use_nonce(access_key_id, params["SignatureNonce"], now)
        return access_key_id

    # -- paging helpers ---------------------------------------------------------------------

    @staticmethod
    def _int(params: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
        raw = params.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise _invalid(name, raw) from None
        if value < minimum:
            raise _invalid(name, raw)
        return value

    def _page(self, action: str, params: Mapping[str, str]) -> tuple[PageSpec, int, int]:
        spec = PAGINATION[action]
        page = self._int(params, spec.index_param, 1)
        size = self._int(params, spec.size_param, spec.default_size)
        if size > spec.max_size:
            raise _invalid(spec.size_param, str(size))
        return spec, page, size

    def _paged(
        self,
        action: str,
        params: Mapping[str, str],
        items: Sequence[T],
        render: Callable[[T], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """One page of ``items``; only the page's items are rendered (big fleets stay cheap)."""
        spec, page, size = self._page(action, params)
        sliced = page_slice(items, spec, page, size)
        rows = [render(i) for i in sliced] if render is not None else sliced
        return {
            "PageInfo": {
                "CurrentPage": page,
                "PageSize": size,
                "TotalCount": len(items),
                "Count": len(rows),
            },
            spec.list_field: rows,
        }

    def _states(self, site: str, now: float, uuids: set[str] | None = None) -> list[ImageState]:
        if not uuids:
            return self.fleet.states("aliyun", site, now)
        self.fleet.specs("aliyun", site)  # make sure the site is generated
        found = (self.fleet.find("aliyun", uuid) for uuid in uuids)  # by key: big fleets stay cheap
        specs = sorted(
            (s for s in found if s is not None and s.site == site), key=lambda s: s.index
        )
        return [self.fleet.state(s, now) for s in specs]

    # -- actions ----------------------------------------------------------------------------

    def _describe_image_instances(
        self, params: dict[str, str], site: str, now: float
    ) -> dict[str, Any]:
        states = self._states(site, now)
        scanned = params.get("Scanned")
        if scanned:
            want = scanned.lower() == "true"
            states = [s for s in states if (s.last_scan_ms > 0) == want]
        if params.get("Criteria"):
            items = [_image_instance(s) for s in states]
            items = _apply_criteria(items, params["Criteria"], params.get("LogicalExp", "OR"))
            return self._paged("DescribeImageInstances", params, items)
        return self._paged("DescribeImageInstances", params, states, _image_instance)

    def _describe_image_baseline_check_result(
        self, params: dict[str, str], site: str, now: float
    ) -> dict[str, Any]:
        image_uuid = params.get("ImageUuid")
        if not image_uuid:
            raise _missing("ImageUuid")
        spec = self._image(image_uuid, site)
        rows: list[dict[str, Any]] = []
        if spec is not None:
            state = self.fleet.state(spec, now)
            levels = _csv(params.get("RiskLevel"))
            needle = params.get("Criteria", "").lower()
            by_class = params.get("CriteriaType") == "BaselineClassAlias"
            for b in state.findings.baseline:
                if levels and b.level not in levels:
                    continue
                haystack = b.class_alias if by_class else f"{b.key} {b.alias}"
                if needle and needle not in haystack.lower():
                    continue
                rows.append(
                    {
                        "Status": 0 if b.risk_items else 1,
                        "LowRiskItemCount": b.low,
                        "BaselineNameLevel": b.level,
                        "LastScanTime": state.last_scan_ms,
                        "MiddleRiskItemCount": b.middle,
                        "BaselineNameKey": b.key,
                        "BaselineItemCount": b.item_count,
                        "BaselineNameAlias": b.alias,
                        "BaselineClassAlias": b.class_alias,
                        "FirstScanTime": _first_scan_ms(spec),
                        "HighRiskItemCount": b.high,
                    }
                )
        return self._paged("DescribeImageBaselineCheckResult", params, rows)

    def _list_image_risk(self, params: dict[str, str], site: str, now: float) -> dict[str, Any]:
        image_name = params.get("ImageName", "")
        namespace = params.get("Namespace", "")
        states = [
            state
            for state in self._states(site, now)
            if state.spec.deployed  # ListImageRisk covers the images in use in clusters
            and (not image_name or image_name in state.spec.sas_image_name)
            and (not namespace or namespace == state.spec.namespace)
        ]
        return self._paged("ListImageRisk", params, states, _image_risk)

    def _describe_affected_malicious_file_images(
        self, params: dict[str, str], site: str, now: float
    ) -> dict[str, Any]:
        # Both paging parameters are documented as required (PageSize typed as a string).
        for name in ("CurrentPage", "PageSize"):
            if not params.get(name):
                raise _missing(name)
        levels = _csv(params.get("Levels"))
        statuses = _csv(params.get("Status"))
        exact: dict[str, Callable[[ImageSpec], str]] = {
            "ImageUuid": lambda s: s.uuid,
            "ImageDigest": lambda s: s.digest_hex,
            "ImageTag": lambda s: s.tag,
            "RepoId": lambda s: s.repo_id,
            "RepoInstanceId": lambda s: s.instance_id,
            "RepoRegionId": lambda s: s.registry_region,
            "Image": lambda s: s.sas_image_name,
        }
        fuzzy: dict[str, Callable[[ImageSpec], str]] = {
            "RepoName": lambda s: s.repo,
            "RepoNamespace": lambda s: s.namespace,
        }
        rows = []
        for state in self._states(site, now):
            spec = state.spec
            if any(params.get(k) and params[k] != get(spec) for k, get in exact.items()):
                continue
            if any(params.get(k) and params[k] not in get(spec) for k, get in fuzzy.items()):
                continue
            for m in state.findings.malware:
                if levels and m.level not in levels:
                    continue
                if statuses and str(m.status) not in statuses:
                    continue
                if params.get("MaliciousMd5") and params["MaliciousMd5"] != m.md5:
                    continue
                rows.append((state, m))
        return self._paged(
            "DescribeAffectedMaliciousFileImages", params, rows, lambda r: _malware_row(*r)
        )

    def _describe_image_vul_list(
        self, params: dict[str, str], site: str, now: float
    ) -> dict[str, Any]:
        vul_type = params.get("Type")
        if not vul_type:
            raise _missing("Type")
        if vul_type not in _VUL_TYPES:
            raise _invalid("Type", vul_type)
        uuids = _csv(params.get("Uuids"))
        necessities = _csv(params.get("Necessity"))
        statuses = _csv(params.get("StatusList"))
        rows: list[tuple[ImageState, VulFinding, int]] = []
        if vul_type == "cve" and (not statuses or "1" in statuses):
            for state in self._states(site, now, uuids):
                for i, v in enumerate(self.fleet.vulns(state)):
                    if necessities and v.necessity not in necessities:
                        continue
                    rows.append((state, v, i))
        spec, page, size = self._page("DescribeImageVulList", params)
        return {
            "CurrentPage": page,
            "PageSize": size,
            "TotalCount": len(rows),
            "VulRecords": [_vul_record(*r) for r in page_slice(rows, spec, page, size)],
        }

    def _image(self, image_uuid: str, site: str) -> ImageSpec | None:
        self.fleet.specs("aliyun", site)  # make sure the site is generated
        spec = self.fleet.find("aliyun", image_uuid)
        return spec if spec is not None and spec.site == site else None


# -- rendering ---------------------------------------------------------------------------------


def _csv(value: str | None) -> set[str]:
    return {v.strip() for v in (value or "").split(",") if v.strip()}


def _yes(count: int) -> str:
    return "YES" if count > 0 else "NO"


def _first_scan_ms(spec: ImageSpec) -> int:
    return spec.updated_ms + 3_600_000


def _image_risk(state: ImageState) -> dict[str, Any]:
    """One ListImageRisk row."""
    spec, f = state.spec, state.findings
    statistics = {
        "baselineNum": f.hc_count,
        "newSuspicious": sum(1 for m in f.malware if m.status == 0),
        "vul": f.vul_count,
    }
    host = spec.registry_host
    vpc_host = f"registry-vpc.{spec.registry_region}.aliyuncs.com"
    return {
        "RepoNamespace": spec.namespace,
        "RepoName": spec.repo,
        "Tag": spec.tag,
        "RegionId": spec.registry_region,
        "Digest": spec.digest_hex,
        "RepoId": spec.repo_id,
        "RepoType": spec.repo_type.upper(),
        "RegistryType": spec.registry_type,
        "Endpoints": f"https://{host}",
        "ImageId": spec.image_hex,
        "TagImmutable": 0,
        "Statistics": json.dumps(statistics),
        "ImageAccessType": "NOT_IN_SAS" if state.phase == "never" else "IN_SAS",
        "Image": spec.sas_image_name,
        "Uuid": spec.uuid,
        "EndPointList": [
            {"Domains": [host], "Type": "internet"},
            {"Domains": [vpc_host], "Type": "intranet"},
        ],
        "InternetURLs": f"{host}/{spec.namespace}/{spec.repo}",
        "VpcURLs": f"{vpc_host}/{spec.namespace}/{spec.repo}",
    }


def _image_instance(state: ImageState) -> dict[str, Any]:
    spec, f = state.spec, state.findings
    vul, hc, alarm = f.vul_count, f.hc_count, len(f.malware)
    return {
        "Status": "NORMAL",
        "Digest": spec.digest_hex,
        "RegistryType": spec.registry_type,
        "Tag": spec.tag,
        "ImageUpdate": _ms_str(spec.updated_ms),
        "RepoType": spec.repo_type,
        # The doc says MB, its own example is bytes; we emit bytes (as a string, like the doc).
        "ImageSize": str(spec.size_bytes),
        "HcStatus": _yes(hc),
        "VulCount": vul,
        "ImageId": spec.image_hex,
        "Endpoints": json.dumps([spec.registry_host]),
        "RiskStatus": _yes(vul + hc + alarm),
        "ImageCreate": _ms_str(spec.created_ms),
        "VulStatus": _yes(vul),
        "AlarmStatus": _yes(alarm),
        "ScaProgress": state.progress,
        "InstanceId": spec.instance_id,
        "RegionId": spec.registry_region,
        "ScaStatus": state.sca_status,
        "Uuid": spec.uuid,
        "RepoId": spec.repo_id,
        "HcCount": hc,
        "ScaResult": "TASK_NOT_EXISTS" if state.phase == "failed" else "",
        "RepoName": spec.repo,
        "AlarmCount": alarm,
        "RepoNamespace": spec.namespace,
        "Deployed": 1 if spec.deployed else 0,
        "LastScanTime": state.last_scan_ms,
        "SourceBizTag": "",
    }


_CRITERIA_FIELDS = {
    "riskStatus": "RiskStatus",
    "vulStatus": "VulStatus",
    "hcStatus": "HcStatus",
    "alarmStatus": "AlarmStatus",
    "repoName": "RepoName",
    "repoNamespace": "RepoNamespace",
    "tag": "Tag",
    "instanceId": "InstanceId",
    "regionId": "RegionId",
    "imageId": "ImageId",
    "digest": "Digest",
    "uuid": "Uuid",
    "scaStatus": "ScaStatus",
}


def _apply_criteria(
    items: list[dict[str, Any]], criteria: str, logical_exp: str
) -> list[dict[str, Any]]:
    try:
        parsed = json.loads(criteria)
        conditions = [(str(c["name"]), str(c["value"])) for c in parsed]
    except (ValueError, TypeError, KeyError):
        raise _invalid("Criteria", criteria) from None
    known = [(_CRITERIA_FIELDS[n], v) for n, v in conditions if n in _CRITERIA_FIELDS]
    if not known:
        return items
    combine = all if logical_exp.upper() == "AND" else any
    return [item for item in items if combine(str(item[f]) == v for f, v in known)]


def _cluster(spec: ImageSpec) -> dict[str, str]:
    if not spec.deployed:
        return {"ClusterId": "", "ClusterName": "", "ContainerId": "", "Pod": "", "Namespace": ""}
    return {
        "ClusterId": "c" + spec.digest_hex[:31],
        "ClusterName": f"{spec.registry_region}-prod",
        "ContainerId": spec.image_hex[::-1],
        "Pod": f"{spec.repo}-{spec.digest_hex[:10]}-{spec.image_hex[:5]}",
        "Namespace": spec.namespace,
    }


def _host(spec: ImageSpec) -> dict[str, str]:
    n = int(spec.digest_hex[:4], 16)
    return {
        "InstanceName": f"node-{spec.registry_region}-{n % 50:02d}",
        "InternetIp": f"47.101.{n % 256}.{(n >> 8) % 256}",
        "IntranetIp": f"172.22.{n % 256}.{(n >> 8) % 256}",
    }


def _malware_row(state: ImageState, m: MalwareFinding) -> dict[str, Any]:
    spec = state.spec
    return {
        "Status": m.status,
        "Digest": spec.digest_hex,
        "LatestVerifyTimestamp": state.last_scan_ms,
        "RepoInstanceId": spec.instance_id,
        "Namespace": spec.namespace,
        "Tag": spec.tag,
        "RepoRegionId": spec.registry_region,
        "ImageUuid": spec.uuid,
        "FirstScanTimestamp": m.first_seen_ms,
        "MaliciousMd5": m.md5,
        "FilePath": m.path,
        "RepoId": spec.repo_id,
        "Layer": m.layer,
        "LatestScanTimestamp": state.last_scan_ms,
        "RepoName": spec.repo,
        "Level": m.level,
        "DownloadUrl": f"https://aegis-metadata-file.oss-{ALIYUN_SITE_INTL}.aliyuncs.com/{m.md5}",
        "HighLight": json.dumps(
            {"ruleVersion": "highlight_20210908", "ruleId": 600106, "events": [[2, 54]]},
            separators=(",", ":"),
        ),
        **_cluster(spec),
        "Image": spec.sas_image_name,
        **_host(spec),
        "TargetId": "",
        "TargetName": "",
        "TargetType": "",
        "Uuid": str(uuid.UUID(spec.digest_hex[:32], version=4)),
    }


def _vul_record(state: ImageState, v: VulFinding, primary_id: int) -> dict[str, Any]:
    spec = state.spec
    family, _, release = spec.os_name.partition(":")
    return {
        "Name": f"{family}:{release.split('.')[0]}:{v.cve}",
        "AliasName": f"{v.cve}: {v.package} vulnerability",
        "Necessity": v.necessity,
        "Status": 1,
        "CanFix": "yes",
        "CanUpdate": True,
        "AgentlessCanFix": False,
        "Type": "cve",
        "Related": v.cve,
        "RuleTag": "",
        "PrimaryId": int(spec.digest_hex[:6], 16) * 1000 + primary_id,
        "Uuid": spec.uuid,
        "Image": spec.sas_image_name,
        "ImageDigest": spec.digest_hex,
        "Tag": spec.tag,
        "RepoName": spec.repo,
        "RepoNamespace": spec.namespace,
        "FirstTs": v.first_seen_ms,
        "LastTs": state.last_scan_ms,
        "ModifyTs": state.last_scan_ms,
        "ScanTime": state.last_scan_ms,
        "Layers": [v.layer],
        "MaliciousSource": "",
        "TargetId": "",
        "TargetName": "",
        "TargetType": "",
        **_cluster(spec),
        **_host(spec),
        "ExtendContentJson": {
            "Os": family,
            "OsRelease": release,
            "RpmEntityList": [
                {
                    "Name": v.package,
                    "Version": v.version,
                    "FullVersion": f"{v.version}-1",
                    "Path": f"/var/lib/dpkg/status:{v.package}",
                    "Layer": v.layer,
                    "UpdateCmd": f"upgrade {v.package} to {v.fixed_version}",
                    "MatchDetail": f"{v.package} version less than {v.fixed_version}",
                    "MatchList": [f"{v.package} version less than {v.fixed_version}"],
                }
            ],
        },
    }
