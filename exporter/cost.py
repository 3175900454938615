"""What the configured sources will cost in API calls a day, logged at start.

From the intervals and an estimate of the fleet: ``refresh.estimated_images`` per source when
configured, else 1,000 images (the log says it was assumed). Steady state assumes each image
is rescanned once a day, the vendors' default scan policy being daily (also logged as an
assumption); a per-image collector costs its calls per image on the first pass, then only for
images whose scan finished (TCSS details: one more when a scan starts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.refresh import Source

ASSUMED_IMAGES = 1000
RESCANS_PER_DAY = 1.0
DAY = 86_400.0

# collector -> (rows per page of a listing, or 0 for a per-image collector; calls per image
# and finished scan). sas_malicious lists affected files, assumed to fit on one page.
_CALLS: dict[str, tuple[int, float]] = {
    "sas_images": (20, 0),
    "sas_image_risk": (20, 0),
    "sas_malicious": (0, 0),
    "tcss_images": (100, 0),
    "sas_baseline": (0, 1),
    "sas_vulnerabilities": (0, 1),  # one page of records: images with up to 100 open CVEs
    "tcss_image_detail": (0, 2),  # one when the scan starts, one when it finishes
}


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """API calls of the configured sources: the first pass and a steady-state day."""

    first_pass: int
    per_day: int
    images_per_source: int
    assumed: bool


def estimate(sources: Sequence[Source], images: int | None) -> CostEstimate:
    """Estimate the calls of ``sources`` for ``images`` per source (None: assume 1,000)."""
    n = ASSUMED_IMAGES if images is None else images
    first = day = 0.0
    for source in sources:
        page, per_image = _CALLS.get(source.key.source, (0, 0))
        passes = DAY / source.interval
        if per_image:
            first += n
            day += n * per_image * RESCANS_PER_DAY
        else:
            calls = math.ceil(max(n, 1) / page) if page else 1
            first += calls
            day += calls * passes
    return CostEstimate(round(first), round(day), n, images is None)
