"""Cloud providers: request signing and API clients, one subpackage per cloud."""

from __future__ import annotations
