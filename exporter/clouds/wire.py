"""Reusable field types of the lenient response models: what ``null`` and hostile values mean.

A ``null`` where a string or a number belongs is the field being absent: ``Text`` reads it as
"" and the numeric types as None, so the row keeps its other fields. Only a missing identity
(``Identity``) makes a row invalid. Every string passes through ``clean_label`` (encodable,
bounded) before it can reach a record; numbers are bounded so that ``float()`` of them cannot
overflow and no infinity or NaN reaches a sample.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from exporter.normalise import clean_label

MAX_COUNT = 2**53
"""Largest count taken: exactly representable as a float (10**400 makes the row invalid)."""


def _text(value: object) -> object:
    if value is None:
        return ""
    return clean_label(value) if isinstance(value, str) else value


def _identity(value: object) -> object:
    return clean_label(value) if isinstance(value, str) else value


Text = Annotated[str, BeforeValidator(_text)]
"""A string field: null is "", the value is cleaned (``clean_label``)."""

Identity = Annotated[str, BeforeValidator(_identity), Field(min_length=1)]
"""A row's identity: required and non-empty (null, "" or absent make the row invalid)."""

OptionalText = Annotated[str | None, BeforeValidator(_identity)]
"""A string where null (None) means something different from "" (e.g. scanner errors)."""

Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
"""A non-negative count; null is absent where the field is ``Count | None``."""

Finite = Annotated[float, Field(allow_inf_nan=False, ge=-(2.0**63), le=2.0**63)]
"""A finite number (no NaN, no infinities, nothing ``float()`` would round to one)."""
