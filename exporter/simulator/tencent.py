"""Simulated Tencent Cloud Container Security Service (TCSS, API 2020-11-01): auth, actions.

Protocol, as Tencent Cloud API 3.0 (cloud-api-facts.md 2a-2d):

- ``POST /`` with a JSON body, or ``GET /`` (or a form POST) with parameters flattened with
  0-based indexes (``Filters.0.Values.0=scanned``). The action comes from ``X-TC-Action``.
- TC3-HMAC-SHA256 is verified with service ``tcss`` over the ``Host`` and ``Content-Type``
  exactly as received and the payload hash; ``X-TC-Timestamp`` must be within 5 minutes of the
  simulator clock. ``X-TC-Token`` is accepted with any long-lived SecretId; a temporary one
  (from the simulated STS or CVM metadata) needs its own token and is refused once expired
  (``AuthFailure.TokenFailure``). Only the headers the
  official SDK signs (``content-type;host``) are supported in ``SignedHeaders``.
- Every answer is HTTP 200 with ``Content-Type: application/json`` exactly (the SDK only
  looks for ``Response.Error`` with that exact value) and the body
  ``{"Response": {..., "RequestId": uuid}}``; errors are
  ``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}``.
- Flow control: 20 requests per second per (SecretId, action), the documented TCSS quota; the
  excess gets ``RequestLimitExceeded``.
- ``X-TC-Region`` selects the region's images (default ap-guangzhou, as TCSS documents Region
  as optional); an unknown region gets ``UnsupportedRegion``.
- Times (``CreateTime``, ``ScanTime``) are ``YYYY-MM-DD HH:MM:SS`` strings in Beijing time
  (UTC+8), as the vendor's samples; ``ScanTime`` is ``""`` for an image never scanned.
- ``ScanStatus`` is lower camel case in DescribeAssetImageList (``notScan``, ``scanning``,
  ``scanned``, ``scanErr``, the filter vocabulary) and upper case in DescribeAssetImageDetail
  (``NOTSCAN``, ``SCANNING``, ``SCANNED``, ``SCANERR``), matching the vendor's own samples
  ("SCANNED" in the detail example).
"""

from __future__ import annotations

import datetime
import hmac
import json
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from exporter.clouds.tencent.signing import (
    canonical_request_tc3,
    parse_authorization_tc3,
    signature_tc3,
)
from exporter.simulator.core import (
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
from exporter.simulator.fleet import TENCENT_REGIONS, Fleet, ImageSpec, ImageState
from exporter.simulator.identity import TemporaryKeyError

if TYPE_CHECKING:
    from exporter.simulator.core import Simulator

logger = logging.getLogger(__name__)

API_VERSION = "2020-11-01"
SERVICE = "tcss"
CONTENT_TYPE = "application/json"
RATE_PER_SECOND = 20.0
MAX_SKEW_SECONDS = 5 * 60
DEFAULT_REGION = "ap-guangzhou"
_BEIJING = datetime.timezone(datetime.timedelta(hours=8))

PAGINATION: dict[str, PageSpec] = {
    "DescribeAssetImageList": PageSpec(
        "offset", "List", "Limit", "Offset", 10, 100, ("Response", "TotalCount")
    ),
}

# DescribeAssetImageDetail Status: only 5 (= SCANNED) is attested, by the vendor sample; the
# other values are this simulator's invention.
_DETAIL_STATUS = {"never": 0, "scanning": 1, "done": 5, "failed": 6}
_SORTABLE = {
    "ImageID",
    "ImageName",
    "CreateTime",
    "Size",
    "HostCnt",
    "ContainerCnt",
    "ScanTime",
    "VulCnt",
    "RiskCnt",
    "VirusCnt",
}
_SECURITY_RISK: dict[str, Callable[[dict[str, Any]], bool]] = {
    "VirusCnt": lambda i: i["VirusCnt"] > 0,
    "RiskCnt": lambda i: i["RiskCnt"] > 0,
    "IsTrustImage": lambda i: bool(i["IsTrustImage"]),
    "CriticalLevelVul": lambda i: i["CriticalLevelVulCnt"] > 0,
    "HighLevelVul": lambda i: i["HighLevelVulCnt"] > 0,
    "MediumLevelVul": lambda i: i["MediumLevelVulCnt"] > 0,
    "LowLevelVul": lambda i: i["LowLevelVulCnt"] > 0,
}


class TcError(Exception):
    """An API 3.0 error, rendered in the 200 envelope."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


def beijing_time(ms: int) -> str:
    """Format epoch milliseconds as TCSS does: ``YYYY-MM-DD HH:MM:SS`` in UTC+8; 0 gives ""."""
    if ms <= 0:
        return ""
    moment = datetime.datetime.fromtimestamp(ms / 1000, _BEIJING)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Rebuild nested params from ``Filters.0.Values.0=x`` style names (0-based lists)."""
    root: dict[str, Any] = {}
    for name, value in pairs:
        parts = name.split(".")
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt_is_index = not last and parts[i + 1].isdigit()
            if isinstance(node, list):
                index = int(part)
                while len(node) <= index:
                    node.append(None)
                if last:
                    node[index] = value
                else:
                    if node[index] is None:
                        node[index] = [] if nxt_is_index else {}
                    node = node[index]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, [] if nxt_is_index else {})
    return root


class TencentService:
    """The TCSS endpoint of one :class:`~exporter.simulator.core.Simulator`."""

    def __init__(self, simulator: Simulator) -> None:
        self.sim = simulator
        self.limiter = TokenBucket(RATE_PER_SECOND)
        self._actions: dict[str, Callable[[dict[str, Any], bool, str, float], dict[str, Any]]] = {
            "DescribeAssetImageList": self._describe_asset_image_list,
            "DescribeAssetImageDetail": self._describe_asset_image_detail,
        }

    @property
    def fleet(self) -> Fleet:
        return self.sim.fleet

    def reset(self) -> None:
        """Refill the rate-limit buckets."""
        self.limiter.reset()

    def handle(self, request: SimRequest) -> SimResponse:
        """Answer one TCSS request."""
        request_id = str(uuid.uuid4())
        action = request.header("X-TC-Action") or ""
        self.sim.count("tencent", action)
        fired = self.sim.faults.draw("tencent", action)
        delay = sum(f.delay_seconds for f in fired if f.kind == "latency")
        replacing = next((f for f in fired if f.kind in REPLACING_KINDS), None)
        if replacing is not None:
            response = self._fault_response(replacing, request_id)
        else:
            try:
                inner = self._process(request, action)
            except TcError as err:
                logger.debug("tcss error code=%s", err.code)
                inner = {"Error": {"Code": err.code, "Message": err.message}}
                fired = []
            payload = {**inner, "RequestId": request_id}
            spec = PAGINATION.get(action)
            truncate = mutate_payload(payload, fired, spec.list_field if spec else None)
            response = SimResponse.of_json(200, {"Response": payload}, CONTENT_TYPE)
            if truncate:
                response = truncated(response)
        response.delay = delay
        return response

    @staticmethod
    def _fault_response(fault: Fault, request_id: str) -> SimResponse:
        if fault.kind == "html_error":
            return html_error_page(502)
        status = 200
        if fault.kind == "throttle":
            code, message = "RequestLimitExceeded", _limit_message()
        elif fault.kind == "server_error":
            status = fault.status
            if status == 503:
                code, message = "ServiceUnavailable", "Service is unavailable now."
            else:
                code, message = "InternalError", "An internal error occurred."
        else:  # auth_failure
            code = fault.code or "AuthFailure.SignatureFailure"
            message = "The provided credentials could not be validated."
        body = {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": request_id}}
        return SimResponse.of_json(status, body, CONTENT_TYPE)

    def _process(self, request: SimRequest, action: str) -> dict[str, Any]:
        if request.method not in ("GET", "POST"):
            raise TcError("UnsupportedProtocol", f"HTTP method {request.method} is not supported.")
        if not action:
            raise TcError(
                "MissingParameter", "The request is missing a required parameter `Action`."
            )
        handler = self._actions.get(action)
        if handler is None:
            raise TcError("InvalidAction", f"The requested action `{action}` does not exist.")
        version = request.header("X-TC-Version")
        if not version:
            raise TcError(
                "MissingParameter", "The request is missing a required parameter `Version`."
            )
        if version != API_VERSION:
            raise TcError("NoSuchVersion", f"The requested version `{version}` does not exist.")
        now = self.sim.clock()
        secret_id = self._verify(request, now)
        region = request.header("X-TC-Region") or DEFAULT_REGION
        if region not in TENCENT_REGIONS:
            raise TcError("UnsupportedRegion", f"The region `{region}` is not supported.")
        if not self.limiter.allow((secret_id, action), now):
            raise TcError("RequestLimitExceeded", _limit_message())
        params, flattened = self._params(request)
        return handler(params, flattened, region, self.fleet.now())

    def _verify(self, request: SimRequest, now: float, expected_service: str = SERVICE) -> str:
        authorization = request.header("Authorization")
        if not authorization:
            raise TcError(
                "AuthFailure.InvalidAuthorization", "The Authorization header is missing."
            )
        try:
            secret_id, _date, service, signed, signature = parse_authorization_tc3(authorization)
        except ValueError:
            raise TcError(
                "AuthFailure.InvalidAuthorization", "The Authorization header is malformed."
            ) from None
        if sorted(h.lower() for h in signed) != ["content-type", "host"]:
            raise TcError(
                "AuthFailure.InvalidAuthorization",
                "This simulator verifies SignedHeaders=content-type;host only.",
            )
        if service != expected_service:
            raise TcError(
                "AuthFailure.InvalidAuthorization",
                f"The credential scope service `{service}` does not match `{expected_service}`.",
            )
        raw_timestamp = request.header("X-TC-Timestamp") or ""
        if not raw_timestamp.isdigit():
            raise TcError(
                "MissingParameter", "The request is missing a required parameter `Timestamp`."
            )
        timestamp = int(raw_timestamp)
        secret_key = self.sim.tencent_keys.get(secret_id)
        if secret_key is None:
            try:
                secret_key = self.sim.identity.secret(
                    "tencent", secret_id, request.header("X-TC-Token"), now
                )
            except TemporaryKeyError as err:
                raise TcError(err.code, err.message) from None
        if secret_key is None:
            raise TcError(
                "AuthFailure.SecretIdNotFound",
                "The SecretId is not found, please ensure that your SecretId is correct.",
            )
        if abs(timestamp - now) > MAX_SKEW_SECONDS:
            raise TcError(
                "AuthFailure.SignatureExpire",
                f"Signature expired. Timestamp: {timestamp}, current server time: {int(now)}. "
                "The request timestamp and the server time cannot differ by more than five "
                "minutes.",
            )
        query, payload = (request.query, b"") if request.method == "GET" else ("", request.body)
        canonical = canonical_request_tc3(
            request.method,
            query,
            request.header("Content-Type") or "",
            request.header("Host") or "",
            payload,
        )
        expected = signature_tc3(secret_key, timestamp, expected_service, canonical)
        if not hmac.compare_digest(expected, signature):
            raise TcError(
                "AuthFailure.SignatureFailure",
                "The provided credentials could not be validated. "
                "Please check your signature is correct.",
            )
        return secret_id

    @staticmethod
    def _params(request: SimRequest) -> tuple[dict[str, Any], bool]:
        content_type = (request.header("Content-Type") or "").split(";", 1)[0].strip().lower()
        if request.method == "POST" and content_type == "application/json":
            try:
                params = json.loads(request.body or b"{}")
            except ValueError:
                raise TcError("InvalidParameter", "The request body is not valid JSON.") from None
            if not isinstance(params, dict):
                raise TcError("InvalidParameter", "The request body must be a JSON object.")
            return params, False
        pairs = request.query_pairs() if request.method == "GET" else request.form_pairs()
        return unflatten(pairs), True

    # -- actions ----------------------------------------------------------------------------

    def _states(self, region: str, now: float) -> list[ImageState]:
        return self.fleet.states("tencent", region, now)

    def _describe_asset_image_list(
        self, params: dict[str, Any], flattened: bool, region: str, now: float
    ) -> dict[str, Any]:
        spec = PAGINATION["DescribeAssetImageList"]
        limit = _int_param(params, "Limit", spec.default_size, flattened)
        offset = _int_param(params, "Offset", 0, flattened)
        if not 0 <= limit <= spec.max_size:
            raise TcError(
                "InvalidParameterValue.DataRange",
                f"The value of `Limit` ({limit}) is out of range [0, {spec.max_size}].",
            )
        if offset < 0:
            raise TcError(
                "InvalidParameterValue.DataRange", f"The value of `Offset` ({offset}) is negative."
            )
        filters = _filters(params.get("Filters"))
        by, order = params.get("By"), str(params.get("Order") or "asc").lower()
        sort = isinstance(by, str) and by in _SORTABLE
        states = self._states(region, now)
        if not filters and not sort:  # the common walk: render only the page
            page = page_slice(states, spec, offset, limit)
            return {"List": [_images_info(s) for s in page], "TotalCount": len(states)}
        items = [_images_info(state) for state in states]
        for flt in filters:
            items = [item for item in items if _filter_matches(item, flt)]
        if sort:
            items.sort(key=lambda i: i[str(by)], reverse=order in ("desc", "-"))
        return {"List": page_slice(items, spec, offset, limit), "TotalCount": len(items)}

    def _describe_asset_image_detail(
        self, params: dict[str, Any], flattened: bool, region: str, now: float
    ) -> dict[str, Any]:
        image_id = params.get("ImageID")
        if not image_id:
            raise TcError(
                "MissingParameter", "The request is missing a required parameter `ImageID`."
            )
        if not isinstance(image_id, str):
            raise TcError("InvalidParameter", "The type of `ImageID` is invalid.")
        self.fleet.specs("tencent", region)
        spec = self.fleet.find("tencent", image_id)
        if spec is None or spec.site != region:
            raise TcError("ResourceNotFound", "The resource does not exist.")
        return _image_detail(self.fleet.state(spec, now))


def _limit_message() -> str:
    return (
        f"Your current request times equals to `{int(RATE_PER_SECOND) + 1}` in a second, which "
        f"exceeds the frequency limit `{int(RATE_PER_SECOND)}` for a second. "
        "Please reduce the frequency of calls."
    )


def _int_param(params: dict[str, Any], name: str, default: int, flattened: bool) -> int:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TcError("InvalidParameter", f"The type of `{name}` is invalid.")
    if isinstance(value, str):
        # Query and form parameters are strings on the wire; JSON ones must be numbers.
        if not flattened or not value.lstrip("-").isdigit():
            raise TcError("InvalidParameter", f"The type of `{name}` is invalid.")
        return int(value)
    return value


def _filters(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(f, dict) for f in raw):
        raise TcError("InvalidParameter", "The type of `Filters` is invalid.")
    out = []
    for flt in raw:
        values = flt.get("Values") or []
        if not isinstance(values, list):
            raise TcError("InvalidParameter", "The type of `Filters.Values` is invalid.")
        out.append({**flt, "Values": [str(v) for v in values]})
    return out


def _filter_matches(item: dict[str, Any], flt: dict[str, Any]) -> bool:
    # Filters are AND-ed; the values of one filter are OR-ed. Unknown names are ignored.
    name, values = flt.get("Name"), flt["Values"]
    if not values:
        return True
    exact = str(flt.get("ExactMatch", "")).lower() == "true"
    if name == "ScanStatus":
        return item["ScanStatus"] in values
    if name == "ImageID":
        return item["ImageID"] in values
    if name == "ImageName":
        if exact:
            return item["ImageName"] in values
        return any(v in item["ImageName"] for v in values)
    if name == "SecurityRisk":
        return any(_SECURITY_RISK[v](item) for v in values if v in _SECURITY_RISK)
    return True


def _is_latest(spec: ImageSpec) -> bool:
    return spec.tag == "latest" or spec.tag.endswith(".0")


def _images_info(state: ImageState) -> dict[str, Any]:
    spec, f = state.spec, state.findings
    error = state.scan_error
    return {
        "ImageID": spec.key,
        "ImageName": spec.tcss_image_name,
        "CreateTime": beijing_time(spec.created_ms),
        "Size": spec.size_bytes,
        "HostCnt": spec.host_cnt,
        "SuperNodeCnt": spec.super_node_cnt,
        "ContainerCnt": spec.container_cnt,
        "ScanTime": beijing_time(state.last_scan_ms),
        "VulCnt": f.tcss_vul_cnt,
        "VirusCnt": len(f.malware),
        "RiskCnt": f.risk_cnt,
        "IsTrustImage": spec.namespace != "library",
        "OsName": spec.os_name,
        "AgentError": "",
        "ScanError": error,
        "ScanStatus": state.tcss_scan_status,
        "ScanVirusError": error,
        "ScanVulError": error,
        "ScanRiskError": error,
        "IsSuggest": 1 if f.critical or f.high else 0,
        "IsAuthorized": 0 if state.phase == "never" else 1,
        "ComponentCnt": f.component_cnt,
        "CriticalLevelVulCnt": f.critical,
        "HighLevelVulCnt": f.high,
        "MediumLevelVulCnt": f.medium,
        "LowLevelVulCnt": f.low,
        "IsLatestImage": _is_latest(spec),
        "RecommendedFix": bool(f.critical or f.high),
        "Solution": "Upgrade the affected packages." if f.critical or f.high else "",
        "Reason": "",
    }


def _image_detail(state: ImageState) -> dict[str, Any]:
    spec, f = state.spec, state.findings
    if state.phase == "done":
        vul = virus = risk = 100
    elif state.phase == "scanning":
        vul = state.progress
        virus = min(99, int(state.progress * 1.4))
        risk = min(99, int(state.progress * 1.8))
    else:
        vul = virus = risk = state.progress if state.phase == "failed" else 0
    error = state.scan_error
    digest = f"sha256:{spec.digest_hex}"
    repo_path = spec.tcss_image_name.rsplit(":", 1)[0]
    created = beijing_time(spec.created_ms)
    return {
        "AgentError": "",
        "Architecture": "amd64",
        "Author": f"{spec.namespace}-team",
        "BuildHistory": f"# create_time:{created} tags:{spec.tcss_image_name}, "
        f"ADD file:{spec.image_hex[:40]} in / ",
        "ContainerCnt": spec.container_cnt,
        "CreateTime": created,
        "HostCnt": spec.host_cnt,
        "SuperNodeCnt": spec.super_node_cnt,
        "ImageDigest": digest,
        "ImageID": spec.key,
        "ImageName": spec.tcss_image_name,
        "IsAuthorized": 0 if state.phase == "never" else 1,
        "IsTrustImage": spec.namespace != "library",
        "OsName": spec.os_name,
        "RemainScanTime": state.remain_s,
        "RiskCnt": f.risk_cnt,
        "ScanError": error,
        "ScanRiskError": error,
        "ScanRiskProgress": risk,
        "ScanStatus": state.tcss_scan_status.upper(),
        "ScanTime": beijing_time(state.last_scan_ms),
        "ScanVirusError": error,
        "ScanVirusProgress": virus,
        "ScanVulError": error,
        "ScanVulProgress": vul,
        "SensitiveInfoCnt": f.sensitive_cnt,
        "Size": spec.size_bytes,
        "Status": _DETAIL_STATUS[state.phase],
        "VirusCnt": len(f.malware),
        "VulCnt": f.tcss_vul_cnt,
        "Solution": "Upgrade the affected packages." if f.critical or f.high else "",
        "Reason": "",
        "RepoDigests": [f"{repo_path}@{digest}"],
    }
