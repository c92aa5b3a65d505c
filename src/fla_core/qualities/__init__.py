"""Qualities (spec 2.1) and the mandate rules each one is subject to (spec 2.2)."""

from __future__ import annotations

from dataclasses import dataclass

from fla_core.model import Quality


@dataclass(frozen=True)
class QualityInfo:
    """What a quality may send.

    ``own_company_only``: M1, every employer must be the channel's own enterprise (EMPLOYER).
    ``needs_mandate``: M2, a level-1 mandate per employer (SERVICE_PROVIDER, SOCIAL_SECRETARIAT).
    ``two_level``: M3 default, also a level-2 record (SOCIAL_SECRETARIAT; configurable in the
    simulator with ``two_level_qualities``).
    ``employer_optional`` / ``own_trainings_only``: M5 (TRAINING_PROVIDER).
    """

    quality: Quality
    description: str
    own_company_only: bool = False
    needs_mandate: bool = False
    two_level: bool = False
    employer_optional: bool = False
    own_trainings_only: bool = False
