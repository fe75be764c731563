"""`Problem`: one thing a person should fix, with the fix, as every check reports it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    node: str | None          # node name; None for the cluster as a whole
    message: str
    fix: str
    kind: str = "other"

    def as_dict(self) -> dict:
        return {"node": self.node, "kind": self.kind, "message": self.message, "fix": self.fix}
