"""Known region ids per vendor: the config refuses others unless ``allow_unknown_regions`` is set.

The tables list the regions each vendor documents for its container security product (Sas:
cloud-api-facts.md 1d, the two sites' region lists; TCSS: Tencent Cloud's public region list).
A vendor opening a new region does not need a new exporter release: set
``allow_unknown_regions: true`` on the account (README, "Configuration reference").
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

ALIYUN_REGIONS = frozenset(
    {
        # China site (tds.cn-shanghai.aliyuncs.com): mainland China, the finance regions, Hong Kong.
        "cn-qingdao",
        "cn-beijing",
        "cn-zhangjiakou",
        "cn-huhehaote",
        "cn-wulanchabu",
        "cn-hangzhou",
        "cn-shanghai",
        "cn-nanjing",
        "cn-fuzhou",
        "cn-shenzhen",
        "cn-heyuan",
        "cn-guangzhou",
        "cn-chengdu",
        "cn-hongkong",
        "cn-hangzhou-finance",
        "cn-shanghai-finance-1",
        "cn-shenzhen-finance-1",
        "cn-beijing-finance-1",
        # International site (tds.ap-southeast-1.aliyuncs.com).
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "ap-southeast-5",
        "ap-southeast-6",
        "ap-southeast-7",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-south-1",
        "us-east-1",
        "us-west-1",
        "eu-central-1",
        "eu-west-1",
        "me-east-1",
        "me-central-1",
    }
)

TENCENT_REGIONS = frozenset(
    {
        "ap-guangzhou",
        "ap-shanghai",
        "ap-nanjing",
        "ap-beijing",
        "ap-chengdu",
        "ap-chongqing",
        "ap-shanghai-fsi",
        "ap-shenzhen-fsi",
        "ap-beijing-fsi",
        "ap-hongkong",
        "ap-taipei",
        "ap-singapore",
        "ap-bangkok",
        "ap-jakarta",
        "ap-seoul",
        "ap-tokyo",
        "ap-mumbai",
        "na-siliconvalley",
        "na-ashburn",
        "na-toronto",
        "eu-frankfurt",
        "sa-saopaulo",
    }
)

REGIONS: dict[str, frozenset[str]] = {"aliyun": ALIYUN_REGIONS, "tencent": TENCENT_REGIONS}


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
