"""Sas endpoints: two sites, each answering for a set of regions (cloud-api-facts.md 1d)."""

from __future__ import annotations

CHINA_HOST = "tds.cn-shanghai.aliyuncs.com"
INTERNATIONAL_HOST = "tds.ap-southeast-1.aliyuncs.com"


def sas_endpoint(region: str) -> str:
    """The Sas host serving ``region``: mainland China and cn-hongkong use the Shanghai site."""
    return CHINA_HOST if region.startswith("cn-") else INTERNATIONAL_HOST
