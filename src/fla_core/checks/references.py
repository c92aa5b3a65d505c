"""Rules 1-5 of spec 8.3: declaration references and the registry (codes 931, 945, 940, 941, 944).

These rules read ``context.seen_refs`` and the registry; the engine updates both after all
checks of a declaration ran, so the order of the check plugins does not matter.
"""

from __future__ import annotations

from fla_core import hookimpl
from fla_core.anomalies import Anomaly, rule_anomaly
from fla_core.checks.context import CheckContext
from fla_core.checks.engine import ACTIVE, declaration_path
from fla_core.model import Action, Declaration

_REFERRING = (Action.REPLACE, Action.CANCEL)


@hookimpl
def fla_check_declaration(declaration: Declaration, position: int,
                          context: CheckContext) -> list[Anomaly]:
    """Rows 1-5: reference reused in the file or registry, replaced reference rules."""
    return [*_own_reference(declaration, position, context),
            *_replaced_reference(declaration, position, context)]


def _own_reference(declaration: Declaration, d: int, context: CheckContext) -> list[Anomaly]:
    ref = declaration.declaration_ref
    path = declaration_path(d, "DeclarationRef")
    if ref in context.seen_refs:
        return [rule_anomaly("931", "00101", path, ref, row=1, declaration=d,
                             catalogue=context.catalogue)]
    if context.registry_status(ref) is not None:
        return [rule_anomaly("945", "00101", path, ref, row=2, declaration=d,
                             catalogue=context.catalogue)]
    return []


def _replaced_reference(declaration: Declaration, d: int,
                        context: CheckContext) -> list[Anomaly]:
    replaced = declaration.replaced_declaration_ref
    path = declaration_path(d, "ReplacedDeclarationRef")
    if declaration.action in _REFERRING:
        if replaced is None:
            return [rule_anomaly("940", "00103", path, None, row=3, declaration=d,
                                 catalogue=context.catalogue)]
        if context.registry_status(replaced) != ACTIVE:
            return [rule_anomaly("944", "00103", path, replaced, row=5, declaration=d,
                                 catalogue=context.catalogue)]
    elif declaration.action == Action.NEW and replaced is not None:
        return [rule_anomaly("941", "00103", path, replaced, row=4, declaration=d,
                             catalogue=context.catalogue)]
    return []
