"""Alibaba Cloud Security Center (Sas, 2018-12-03): signing and client."""

from __future__ import annotations
