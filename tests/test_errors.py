"""The error vocabulary and the cleaning of untrusted text (issue 9)."""

from __future__ import annotations

import pytest

from exporter.errors import CODES, MAX_MESSAGE, REDACTED, clean_message, fold_code
from exporter.normalise import MAX_LABEL, clean_label, clean_stats


@pytest.mark.parametrize(
    ("provider", "code", "folded"),
    [
        ("aliyun", "Throttling.User", "Throttling.User"),
        ("aliyun", "RequestLimitExceeded", "other"),  # a Tencent code from a Sas answer
        ("tencent", "RequestLimitExceeded", "RequestLimitExceeded"),
        ("tencent", "Weird.Code4711", "other"),
        ("tencent", "timeout", "timeout"),
        ("aliyun", "", "other"),
    ],
)
def test_vendor_codes_outside_the_known_set_fold_into_other(
    provider: str, code: str, folded: str
) -> None:
    assert fold_code(provider, code) == folded
    assert folded in CODES


@pytest.mark.parametrize(
    "secret",
    [
        "LTAI5tAbCdEfGhIjKlMnOp",
        "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
        "STS.NUgYrLnoC37mZZCNnAbez2Azy",
        "CAIS9Ao5EXAMPLEtokenwithmanycharacters0123456789",
        "a3f1c0ffee0000deadbeef0000c0ffee0000deadbeef0000c0ffee0000deadbe",
    ],
)
def test_credentials_and_signatures_in_a_vendor_message_are_redacted(secret: str) -> None:
    for template in (
        "Specified signature is not matched: Signature={s}&x=1",
        "x-acs-security-token: {s}",
        "Authorization: TC3-HMAC-SHA256 Credential={s}/2024/tcss, Signature=abc",
        "token={s} rejected",
        "the key {s} is disabled",
    ):
        cleaned = clean_message(template.format(s=secret))
        assert secret not in cleaned and REDACTED in cleaned, cleaned


def test_a_vendor_message_is_bounded_and_printable() -> None:
    cleaned = clean_message("line\nbreak \udc80 " + "word " * 500)
    assert len(cleaned) == MAX_MESSAGE and cleaned.endswith("\u2026")
    assert "\n" not in cleaned and "\udc80" not in cleaned
    cleaned.encode("utf-8")  # strict: no surrogate left


def test_clean_label_makes_every_string_encodable_and_bounded() -> None:
    before = clean_stats.counts()
    assert clean_label("debian") == "debian"
    assert clean_label("ubuntu\ud83d") == "ubuntu\ufffd"
    assert clean_label("a\x00b") == "a\ufffdb"
    assert clean_label("tab\tand \u00e9\u4e2d") == "tab\tand \u00e9\u4e2d"  # kept as they are
    long = clean_label("x" * 10_000)
    assert len(long) == MAX_LABEL and long.endswith("\u2026")
    after = clean_stats.counts()
    assert after["replaced"] - before["replaced"] == 2
    assert after["truncated"] - before["truncated"] == 1
