"""Tencent Cloud Container Security Service (TCSS, 2020-11-01): signing and client."""

from __future__ import annotations
