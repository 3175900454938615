"""Embedded simulator of Alibaba Cloud Sas (2018-12-03) and Tencent Cloud TCSS (2020-11-01).

It serves one deterministic synthetic fleet over both vendors' real protocols: signatures are
verified (Alibaba ACS3-HMAC-SHA256 and HMAC-SHA1 query signing, Tencent TC3-HMAC-SHA256), pages
are sliced as the vendors document, errors use the vendors' bodies, codes and HTTP statuses,
and flow control throttles as the documented quotas do. The official Python SDKs call it
unchanged. Use :class:`Simulator` in-process (``handle`` or ``transport``), or
:class:`SimulatorServer` / :func:`serve_forever` over loopback HTTP.

What the simulator does not emulate
-----------------------------------

- Only five Sas actions (DescribeImageInstances, DescribeImageBaselineCheckResult,
  ListImageRisk, DescribeAffectedMaliciousFileImages, DescribeImageVulList) and two TCSS
  actions (DescribeAssetImageList, DescribeAssetImageDetail); any other action gets the
  vendor's "unknown action" error.
- Long-lived credentials are a fixed key table (the ``DEMO_*`` keys; tests may add to
  ``Simulator.aliyun_keys``/``tencent_keys``), and a security token sent with one of them is
  ignored. Temporary keys come from the simulated STS and instance metadata
  (``Simulator.identity``: roles, OIDC providers, accepted OIDC tokens, the instance role); they
  need their own token and are refused once expired (``InvalidSecurityToken.Expired`` /
  ``InvalidSecurityToken.MismatchWithAccessKey``, ``AuthFailure.TokenFailure``). There is no
  RAM/CAM policy evaluation (no ``NoPermission``/``UnauthorizedOperation`` unless injected as a
  fault, no ``Policy`` or ``ExternalId`` checks), OIDC tokens are opaque strings (no JWT
  signature, audience or expiry), and no MFA.
- STS and instance metadata share the Sas and TCSS listeners (STS requests are told apart by
  their action, metadata by ``/latest/``): STS ``AssumeRole``/``AssumeRoleWithOIDC`` (Alibaba)
  and ``AssumeRole``/``AssumeRoleWithWebIdentity`` (Tencent) only; every metadata credentials
  request issues a fresh key (the real services hand out one key for hours and rotate it); STS
  error codes for unknown roles and bad OIDC tokens are best guesses. Faults apply with the
  actions ``AssumeRole``, ``AssumeRoleWithOIDC``, ``AssumeRoleWithWebIdentity`` and
  ``metadata``.
- Only the signature schemes the official SDKs use by default are verified: Alibaba
  ACS3-HMAC-SHA256 and HMAC-SHA1 (``SignatureVersion=1.0``), not ACS3-HMAC-SM3, ACS3-RSA-SHA256
  or bearer tokens; Tencent TC3-HMAC-SHA256 with ``SignedHeaders=content-type;host`` only (the
  legacy HmacSHA1/HmacSHA256 signatures and extra signed headers are refused).
- Error codes for some failure modes are best guesses where the vendors do not document them:
  a missing Sas signature gives ``MissingParameter`` (AccessKeyId), a V3 body-hash mismatch gives
  ``SignatureDoesNotMatch``, unsupported signed headers give ``IncompleteSignature``; a missing
  TCSS Authorization gives ``AuthFailure.InvalidAuthorization``. Error messages are close to,
  not copies of, the vendors' wording.
- Flow control is a token bucket at the documented quotas: Sas 10/s per (AccessKey, site,
  action), TCSS 20/s per (SecretId, action). The real services count per account (all keys of
  an account share a quota) and also limit per IP and globally in ways not documented.
- Filters: Sas ``Criteria`` supports the field names listed in ``aliyun._CRITERIA_FIELDS``
  (exact match); ListImageRisk ignores ``ClusterId``/``AppName``; DescribeImageVulList
  honours ``Type``, ``Uuids``, ``Necessity`` and ``StatusList`` only, returns records for
  ``Type=cve`` only (``VulCount`` counts those), and ignores ``RegionId`` as a filter. TCSS
  ``By``/``Order`` sort on a fixed set of fields; unknown filter names are ignored. Results
  are never localised (``Lang``/``X-TC-Language`` ignored).
- Vendor quirks reproduced on purpose: Sas ``ImageSize``/``ImageCreate``/``ImageUpdate`` are
  strings (``ImageSize`` in bytes, although the doc says MB); ``ListImageRisk.Statistics`` is a
  JSON string (as documented; the vendor's sample shows an object);
  DescribeAffectedMaliciousFileImages takes ``PageSize`` as a string and returns it as an
  integer; TCSS ``ScanStatus`` is lower camel case in the list and upper case in the
  detail; TCSS times are Beijing time (UTC+8) strings, ``""`` when never scanned.
- Invented where the vendors are silent: the TCSS detail ``Status`` integer (only 5 = SCANNED
  is attested; the simulator uses 0 never scanned, 1 scanning, 6 failed), the meaning of Sas
  ``AlarmCount`` (the number of malicious-file rows of the image), ``ListImageRisk`` listing the
  deployed images only, with ``NOT_IN_SAS`` for never-scanned ones, and the per-scanner TCSS
  progress curves.
- Check order is a guess: an unknown action is refused before authentication, flow control
  is applied after it, and a replayed nonce is only detected on an otherwise valid request.
  Never-scanned Sas images report ``LastScanTime`` 0.
- Sas sites: a listener can be bound to one site (the demo runs one per site, as the real
  ``tds.<site>.aliyuncs.com`` endpoints are); an unbound listener picks the site from a
  ``RegionId`` parameter (international regions map to the ``ap-southeast-1`` site, anything
  else to the China site), or without one from a ``Host`` of ``tds.ap-southeast-1.aliyuncs.com``.
  One TCSS listener serves every region, chosen by ``X-TC-Region``.
- HTTPS only when a listener is given an ``ssl_context`` (the tests do, for the vendors'
  credential libraries); no HTTP/2, no gzip, no request-size limits, no idempotency or
  ``ClientToken``.
"""

from __future__ import annotations

from exporter.simulator.core import (
    DEMO_ALIYUN_ACCESS_KEY_ID,
    DEMO_ALIYUN_ACCESS_KEY_SECRET,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
    PageSpec,
    SimRequest,
    SimResponse,
    SimTransport,
    Simulator,
    SimulatorServer,
    serve_forever,
)
from exporter.simulator.faults import FAULT_KINDS, Fault, FaultKind, FaultPlan
from exporter.simulator.fleet import (
    DEMO_ALIYUN_REGIONS,
    DEMO_TENCENT_REGIONS,
    Fleet,
    ImageSpec,
    ImageState,
)

__all__ = [
    "DEMO_ALIYUN_ACCESS_KEY_ID",
    "DEMO_ALIYUN_ACCESS_KEY_SECRET",
    "DEMO_ALIYUN_REGIONS",
    "DEMO_TENCENT_REGIONS",
    "DEMO_TENCENT_SECRET_ID",
    "DEMO_TENCENT_SECRET_KEY",
    "FAULT_KINDS",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "Fleet",
    "ImageSpec",
    "ImageState",
    "PageSpec",
    "SimRequest",
    "SimResponse",
    "SimTransport",
    "Simulator",
    "SimulatorServer",
    "serve_forever",
]
