"""The four qualities of spec 2.1 with their mandate rules of spec 2.2 (built-in plugin)."""

from __future__ import annotations

from fla_core.hookspecs import hookimpl
from fla_core.model import Quality
from fla_core.qualities import QualityInfo

QUALITIES: tuple[QualityInfo, ...] = (
    QualityInfo(Quality.EMPLOYER, "NOSS employer sending for its own workers",
                own_company_only=True),
    QualityInfo(Quality.SERVICE_PROVIDER, "social service provider mandated by employers",
                needs_mandate=True),
    QualityInfo(Quality.SOCIAL_SECRETARIAT,
                "accredited social secretariat mandated by employers (two-level mandate)",
                needs_mandate=True, two_level=True),
    QualityInfo(Quality.TRAINING_PROVIDER,
                "training provider declaring the trainings it organised, in its own name",
                employer_optional=True, own_trainings_only=True),
)


def table() -> dict[Quality, QualityInfo]:
    """The built-in qualities by name: what a ``CheckContext`` holds unless told otherwise."""
    return {q.quality: q for q in QUALITIES}


def qualities_with(flag: str) -> frozenset[Quality]:
    """The built-in qualities whose ``QualityInfo`` has ``flag`` set (e.g. ``"needs_mandate"``)."""
    return frozenset(q.quality for q in QUALITIES if getattr(q, flag))


@hookimpl
def fla_qualities() -> list[QualityInfo]:
    """The four qualities of spec 2.1."""
    return list(QUALITIES)
