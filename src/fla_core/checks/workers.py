"""Rules 14-18 of spec 8.3: workers of a declaration (codes 942, 943, 901, 004, 932)."""

from __future__ import annotations

from fla_core import hookimpl
from fla_core.anomalies import Anomaly, rule_anomaly
from fla_core.checks.context import CheckContext
from fla_core.checks.engine import declaration_path, worker_path
from fla_core.identifiers import inss_problem
from fla_core.model import Action, Declaration


@hookimpl
def fla_check_declaration(declaration: Declaration, position: int,
                          context: CheckContext) -> list[Anomaly]:
    """Rows 14-15: workers vs action; rows 16-18: each INSS (structure, check digits, twice)."""
    d = position
    cat = context.catalogue
    found: list[Anomaly] = []
    # Rows 14-15 concern the declaration as a whole: worker position 0 (spec 8.2), path Worker[1].
    first = declaration_path(d, "Worker[1]")
    if declaration.action == Action.CANCEL and declaration.workers:
        found.append(rule_anomaly("942", "00121", first, None, row=14, declaration=d,
                                  catalogue=cat))
    elif declaration.action in (Action.NEW, Action.REPLACE) and not declaration.workers:
        found.append(rule_anomaly("943", "00121", first, None, row=15, declaration=d,
                                  catalogue=cat))
    seen: set[str] = set()
    for w, worker in enumerate(declaration.workers, start=1):
        problem = inss_problem(worker.inss)
        if problem is not None:
            found.append(rule_anomaly(problem, "00122", worker_path(d, w, "INSS"), worker.inss,
                                      row=16 if problem == "901" else 17,
                                      declaration=d, worker=w, catalogue=cat))
        if worker.inss in seen:
            found.append(rule_anomaly("932", "00122", worker_path(d, w, "INSS"), worker.inss,
                                      row=18,
                                      declaration=d, worker=w, catalogue=cat))
        seen.add(worker.inss)
    return found
