"""Credentials as production uses them: static keys, STS roles, OIDC, instance metadata.

``chain`` picks each account's provider from its config and environment; a provider
(``static``, ``aliyun``, ``tencent``) fetches one set of credentials; the ``holder`` keeps an
account's current set, renews it ahead of expiry and is shared by all the account's sources.
"""

from __future__ import annotations

from exporter.credentials.base import (
    CREDENTIAL_ERROR_CODES,
    SOURCE_DOWN_CODES,
    Credential,
    CredentialError,
    Fetch,
    Provider,
)
from exporter.credentials.holder import CredentialHolder

__all__ = [
    "CREDENTIAL_ERROR_CODES",
    "SOURCE_DOWN_CODES",
    "Credential",
    "CredentialError",
    "CredentialHolder",
    "Fetch",
    "Provider",
]
