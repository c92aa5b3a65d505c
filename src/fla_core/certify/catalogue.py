"""The catalogue of conformance cases: stable ids, layers, titles, spec sections.

A case never holds a rule: the judge (``fla_core.judge``) raises channel codes (ACRF codes of
``ChannelError``, NOTI error ids of anomalies) and :data:`CODE_CASES` says which case each code
fails. Business rules get one case per NOTI code of the anomaly catalogue (``RUL-<code>``), so
a rule added to ``anomalies.toml`` gets its case without an edit here. Ids are stable: a case
is never renumbered, a retired one is never reused; bump :data:`CATALOGUE_VERSION` when a case
is added, removed or changes meaning.
"""

from __future__ import annotations

import functools

from fla_core.anomalies import default_catalogue
from fla_core.certify.model import LAYERS, CaseSpec

CATALOGUE_VERSION = "1.0"

_FIXED: tuple[CaseSpec, ...] = (
    # transport
    CaseSpec("NAM-001", "transport", "Every file of the folder has an upload name "
             "(FI, FS, GO or TD)", "4.1"),
    CaseSpec("NAM-002", "transport", "Every name is well formed: prefix, elements, date, "
             "sequence, part numbers", "4.2, 4.5"),
    CaseSpec("NAM-003", "transport", "Every name fits the channel: sender number, application, "
             "environment directory", "4.3, 4.4, 4.5"),
    CaseSpec("SET-001", "transport", "Every GO comes with all the FI parts it announces",
             "5.3"),
    CaseSpec("SET-002", "transport", "Every FI and FS part has its GO", "5.1, 5.6"),
    CaseSpec("SET-003", "transport", "The software writes FI, then FS, then GO", "5.1"),
    CaseSpec("SET-004", "transport", "No sequence number is used by two sets", "4.6"),
    CaseSpec("SET-005", "transport", "A TD cancels only a set that exists", "5.5"),
    CaseSpec("SET-006", "transport", "Every FI part holds data and stays within the size "
             "limit", "5.3, 5.8"),
    CaseSpec("SET-007", "transport", "At least the required number of sets was judged",
             "applications B.6.2"),
    CaseSpec("SET-008", "transport", "The channel processes every set (no internal failure)",
             "5.7, 11"),
    # signature
    CaseSpec("SIG-001", "signature", "An FS is present where the environment requires it, "
             "and only for existing FI parts", "5.4, 6"),
    CaseSpec("SIG-002", "signature", "The FS layout is base64 of one detached CMS SignedData",
             "6.1, 6.2"),
    CaseSpec("SIG-003", "signature", "Accepted digest and key algorithms (no SHA-1)", "6.3"),
    CaseSpec("SIG-004", "signature", "The signature matches the FI (digest and value)", "6.4"),
    CaseSpec("SIG-005", "signature", "The certificate chains to a trust anchor and is not "
             "revoked", "6.4, 6.5"),
    CaseSpec("SIG-006", "signature", "The certificate is valid at processing time", "6.4"),
    CaseSpec("SIG-007", "signature", "The certificate's key usage allows signing", "6.4"),
    CaseSpec("SIG-008", "signature", "The signer is linked to the sender", "6.6"),
    # document
    CaseSpec("DOC-001", "document", "The FI is encoded in UTF-8", "5.3 P10, 7.1"),
    CaseSpec("DOC-002", "document", "The FI is well-formed XML without DOCTYPE", "5.3 P11"),
    CaseSpec("DOC-003", "document", "The root element is in the application's namespace",
             "5.3 P12"),
    CaseSpec("DOC-004", "document", "The FI is valid against the XML schema", "5.3 P13, 7.3"),
    CaseSpec("DOC-005", "document", "The file header matches the name and the channel",
             "5.3 P14"),
    CaseSpec("DOC-006", "document", "The file holds no more declarations than allowed",
             "5.3 P15"),
    # round trip (fla_sim.certify_roundtrip runs them)
    CaseSpec("TRP-001", "round trip", "Every set uploaded over SFTP gets its answers "
             "(ACRF, and NOTI when due)", "5.2, 9.1"),
    CaseSpec("TRP-002", "round trip", "The answers' signatures verify", "6.7"),
    CaseSpec("TRP-003", "round trip", "The channel's verdicts agree with the offline judge",
             "5.3, 9"),
    # consistency across files
    CaseSpec("CON-001", "consistency", "Declaration references are unique across the sets",
             "8.3, 8.4"),
    CaseSpec("CON-002", "consistency", "Cancellations and replacements point at an existing, "
             "active declaration", "8.3, 8.4"),
    CaseSpec("CON-003", "consistency", "The same worker or training is not declared twice "
             "across files", "8.3"),
    # the exporter command (--command)
    CaseSpec("CMD-001", "command", "The exporter command exits 0 within the timeout",
             "design 4"),
    CaseSpec("CMD-002", "command", "The exporter command writes at least one set",
             "design 4"),
)

# ACRF codes (``ChannelError.code``) -> the case they fail.
_ACRF_CASES: dict[str, str] = {
    **dict.fromkeys(("107", "109", "110", "111", "112", "114", "115", "116", "117", "123",
                     "124", "126", "127", "128", "129", "131", "132", "367"), "NAM-002"),
    **dict.fromkeys(("108", "118", "119", "154", "257"), "NAM-003"),
    **dict.fromkeys(("120", "142"), "SET-001"),
    "130": "SET-002",
    "133": "SET-004",
    **dict.fromkeys(("134", "184"), "SET-006"),
    "999": "SET-008",
    **dict.fromkeys(("121", "122"), "SIG-001"),
    **dict.fromkeys(("601", "602"), "SIG-002"),
    **dict.fromkeys(("603", "604", "609"), "SIG-003"),
    "125": "SIG-004",
    **dict.fromkeys(("605", "607"), "SIG-005"),
    "606": "SIG-006",
    "608": "SIG-007",
    "153": "SIG-008",
    "138": "DOC-001",
    "102": "DOC-002",
    "139": "DOC-003",
    "312": "DOC-004",
    "158": "DOC-005",
    "172": "DOC-006",
}
# NOTI codes that speak of other files (the registry of earlier sets, spec 8.4).
_CROSS_FILE_CASES: dict[str, str] = {"945": "CON-001", "944": "CON-002"}
# Codes that fail a fixed case whatever their zone (all others: RUL-<code>).
CODE_CASES: dict[str, str] = {**_ACRF_CASES, **_CROSS_FILE_CASES}
# Mandate rules need the mandates (--mandates): without them they do not apply.
MANDATE_CODES = frozenset({"101", "155"})


@functools.cache
def rule_cases() -> tuple[CaseSpec, ...]:
    """One case per business-rule code of the anomaly catalogue (``RUL-<code>``)."""
    catalogue = default_catalogue()
    return tuple(CaseSpec(f"RUL-{info.code}", "rules", info.message, "8.3")
                 for info in sorted(catalogue.codes(), key=lambda i: i.code)
                 if info.where == "NOTI" and info.code not in CODE_CASES
                 and info.severity != "file")


@functools.cache
def cases() -> tuple[CaseSpec, ...]:
    """Every case, in report order (layer by layer, fixed cases then rules)."""
    by_layer: dict[str, list[CaseSpec]] = {layer: [] for layer in LAYERS}
    for case in (*_FIXED, *rule_cases()):
        by_layer[case.layer].append(case)
    return tuple(case for layer in LAYERS for case in by_layer[layer])


@functools.cache
def by_id() -> dict[str, CaseSpec]:
    """Cases by id."""
    return {c.id: c for c in cases()}


def case_for_code(code: str) -> str:
    """The case id a channel code fails (an unknown ACRF code: the processing case)."""
    if code in CODE_CASES:
        return CODE_CASES[code]
    rule = f"RUL-{code}"
    return rule if rule in by_id() else "SET-008"
