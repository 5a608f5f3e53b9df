"""The read side of the audit log: query attempts with their end records, filtered."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from gateway.audit.log import read_audit


@dataclass(frozen=True)
class Attempt:
    """One audited attempt (a query, a refusal, a failed login) and its end record."""

    record: dict
    end: dict = field(default_factory=dict)

    @property
    def decision(self) -> str:
        return str(self.record.get("decision") or self.record["event"].replace("_", " "))

    @property
    def text(self) -> str:
        """The error if there was one, else the SQL the user sent."""
        return str(self.record.get("error") or self.end.get("error") or self.record.get("sql", ""))


def attempts(
    directory: Path,
    user: str | None = None,
    product: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[Attempt]:
    """The newest ``limit`` attempts in the log at ``directory``, oldest first: ``user``'s,
    those reading ``product`` (or naming it in their SQL when refused before resolving),
    those at or after ``since``."""
    ends: dict[str, dict] = {}
    selected: list[dict] = []
    for record in read_audit(directory):
        if record["event"] == "query_end" and "query_id" in record:
            ends[record["query_id"]] = record
        elif _matches(record, user, product, since):
            selected.append(record)
    chosen = selected[-limit:] if limit is not None else selected
    return [Attempt(r, ends.get(r.get("query_id", ""), {})) for r in chosen]


def _matches(record: dict, user: str | None, product: str | None, since: datetime | None) -> bool:
    if user and record.get("user") != user:
        return False
    if product and product not in record.get(
        "products", [product] if product in record.get("sql", "") else []
    ):
        return False
    return not (
        since
        and datetime.fromisoformat(record["time"]).replace(tzinfo=None) < since.replace(tzinfo=None)
    )
