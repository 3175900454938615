"""One HTTP exchange with STS, instance metadata or a credentials URI, failures mapped to codes."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from exporter.credentials.base import CredentialError

log = logging.getLogger(__name__)

STS_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# The vendors' own libraries give instance metadata 1 s to connect and 1 s to answer.
METADATA_TIMEOUT = httpx.Timeout(1.0)


def base_url(endpoint: str | None, default: str) -> str:
    """A configured endpoint (URL, or ``host:port`` meaning HTTPS) or the default URL."""
    if not endpoint:
        return default.rstrip("/")
    return (endpoint if "://" in endpoint else f"https://{endpoint}").rstrip("/")


async def send(http: httpx.AsyncClient, request: httpx.Request, what: str) -> httpx.Response:
    """Send ``request``; transport failures become ``CredentialError`` (timeout, connect)."""
    try:
        return await http.send(request)
    except httpx.TimeoutException:
        raise CredentialError(f"{what}: timed out", code="timeout") from None
    except httpx.HTTPError as err:
        raise CredentialError(f"{what}: {type(err).__name__}", code="connect") from None


def status_error(what: str, response: httpx.Response) -> CredentialError:
    """The error of a non-2xx answer without a vendor code."""
    code = "http_5xx" if response.status_code >= 500 else "http_4xx"
    return CredentialError(f"{what}: HTTP {response.status_code}", code=code)


def json_object(what: str, response: httpx.Response) -> dict[str, Any]:
    """The answer as a JSON object, else ``bad_payload`` (the body is never quoted: secrets)."""
    try:
        body = json.loads(response.content)
    except ValueError:
        raise CredentialError(f"{what}: answer is not JSON", code="bad_payload") from None
    if not isinstance(body, dict):
        raise CredentialError(f"{what}: answer is not a JSON object", code="bad_payload")
    return body


def rejected(what: str, code: object, request_id: object) -> CredentialError:
    """A vendor error answer: its code and request id are kept, its message is not (it may
    echo what was sent)."""
    vendor_code = str(code)[:80]
    err = CredentialError(
        f"{what}: refused with {vendor_code}",
        code="rejected",
        request_id=str(request_id or "")[:80],
    )
    err.vendor_code = vendor_code
    return err


def text_field(what: str, body: dict[str, Any], name: str) -> str:
    """A required non-empty string of a credentials document."""
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise CredentialError(f"{what}: answer has no {name}", code="bad_payload")
    return value


def role_name(what: str, response: httpx.Response) -> str:
    """The instance role name of a metadata answer (the first line of its text)."""
    if response.status_code != 200:
        raise status_error(what, response)
    role = response.text.strip().partition("\n")[0].strip()
    if not role:
        raise CredentialError(f"{what}: the instance has no role", code="bad_payload")
    return role
