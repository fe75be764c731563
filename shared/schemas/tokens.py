"""Join tokens on the wire: what an admin asks for and what the coordinator shows of them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.schemas.common import NodeName, Wire


class TokenCreate(Wire):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"ttl_s": 86400, "uses": 1, "node": "mac-mini-2", "auto_approve": False, "description": "for the new mini"}]})

    ttl_s: float | None = Field(86400, gt=0, le=366 * 86400, description="Seconds until it expires; null: never.")
    uses: int | None = Field(None, ge=1, le=10_000, description="How many nodes may enrol with it; null: any number.")
    node: NodeName | None = Field(None, description="Only this node name may enrol with it, and is admitted at once.")
    auto_approve: bool = Field(False, description="Nodes enrolled with it are admitted at once (not pending).")
    description: Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""


class TokenOut(BaseModel):
    id: str = Field(..., examples=["k3x9q2"])
    description: str = ""
    created_at: datetime
    expires_at: datetime | None
    uses: int
    max_uses: int | None
    node: str | None
    auto_approve: bool
    status: Literal["usable", "expired", "used up", "revoked"]
    token: str | None = Field(None, description="The join string (CA pin, id and secret): in the answer to "
                                                "POST /tokens only, never again.")
