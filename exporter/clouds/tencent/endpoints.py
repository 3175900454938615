"""TCSS endpoints: one host per site (cloud-api-facts.md 2c); the region travels in X-TC-Region."""

from __future__ import annotations

CHINA_HOST = "tcss.tencentcloudapi.com"
INTERNATIONAL_HOST = "tcss.intl.tencentcloudapi.com"


def tcss_host(site: str) -> str:
    """The TCSS host of ``site``: the China site or the international site (tcss.intl.*)."""
    if site == "china":
        return CHINA_HOST
    if site == "international":
        return INTERNATIONAL_HOST
    raise ValueError(f"unknown Tencent Cloud site {site!r} (china or international)")
