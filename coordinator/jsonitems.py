"""A JSON array of pydantic models whose items mostly stay the same between requests: each item's
bytes are kept while it is the same object, so GET /nodes serialises only the nodes that changed.

The bytes are exactly what FastAPI writes for `response_model=list[Model]` (pydantic's
`dump_json` of the list, by alias): an array's JSON is its items' JSON joined by "," in "[...]",
with no spaces, and each item is serialised by the same schema either way.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from pydantic import BaseModel, TypeAdapter


class JsonItems:
    def __init__(self, model: type[BaseModel]):
        self._adapter = TypeAdapter(model)
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[BaseModel, bytes]] = {}  # id(item) -> (item, its JSON)
        self._last: tuple[tuple[BaseModel, ...], bytes] = ((), b"[]")  # the last list and its JSON

    def dump(self, items: Sequence[BaseModel]) -> bytes:
        with self._lock:
            known, last = self._cache, self._last
        if len(items) == len(last[0]) and all(a is b for a, b in zip(items, last[0])):
            return last[1]
        parts, fresh = [], {}
        for item in items:
            hit = known.get(id(item))
            if hit is None or hit[0] is not item:  # the item is kept in the entry, so its id is not reused
                hit = (item, self._adapter.dump_json(item, by_alias=True))
            fresh[id(item)] = hit
            parts.append(hit[1])
        out = b"[" + b",".join(parts) + b"]"
        with self._lock:
            self._cache = fresh  # only this call's items: what is no longer listed goes
            self._last = (tuple(items), out)
        return out
