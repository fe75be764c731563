"""What every wire model shares: the strict base model, the safe host and name rules, plain text,
and the error body."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from shared.text import control_char

# A host is a DNS name or an IPv4/IPv6 literal: nothing a shell or a hostfile could misread.
HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
# Node names are for people ("Main MacBook") but never carry control characters or path parts.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()+-]{0,63}$")


def plain_text(value: str) -> str:
    """Refuse control characters (C0, DEL, C1, bidi overrides): text from nodes is shown to people
    in terminals and pages, where they would be escape sequences or reorder what is shown."""
    found = control_char(value)
    if found:
        raise ValueError(f"contains the control character {found}: only plain text is accepted")
    return value


Host = Annotated[str, StringConstraints(max_length=253), AfterValidator(lambda v: validate_host(v))]
NodeName = Annotated[str, StringConstraints(pattern=NAME_RE.pattern, max_length=64)]
# Plain text: no control characters, no escape sequences (see shared/text.py).
PlainText = AfterValidator(plain_text)
ShortText = Annotated[str, StringConstraints(max_length=256), PlainText]
NodeKey = Annotated[str, StringConstraints(min_length=32, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]

DeviceType = Literal["mac", "nvidia", "cpu"]
Role = Literal["generator", "trainer", "hybrid", "evaluator"]


class Wire(BaseModel):
    """Base for every wire model: unknown fields are refused so typos surface as 422s, and types
    are strict (`"nodes": true` or `"2"` is a 422, not 1 or 2)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorOut(BaseModel):
    detail: str | list | dict


def validate_host(value: str, what: str = "host") -> str:
    """Raise ValueError unless `value` is safe to use as a host in argv and hostfiles:
    an IPv4/IPv6 literal, or a DNS-style name that no shell or hostfile reader can misread."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        ip = None
    if ip is not None:
        if ip.is_unspecified or ip.is_multicast:
            raise ValueError(f"invalid {what} {value!r}: {'an unspecified' if ip.is_unspecified else 'a multicast'} "
                             f"address names no machine; use the node's own address")
        # fullmatch: no trailing newline either; a scope id (fe80::1%en0) is otherwise free text
        if re.fullmatch(r"[0-9A-Za-z:.%_-]+", value):
            return value
    # fullmatch: with match, `$` would also accept a trailing newline ("mini\n")
    if not isinstance(value, str) or not HOST_RE.fullmatch(value) or ".." in value or ":" in value:
        raise ValueError(f"invalid {what} {value!r}: use a DNS name or an IP address")
    if re.fullmatch(r"[0-9.]+", value):  # "0", "127.1", "10.1.2": resolvers read them as IPv4 addresses
        raise ValueError(f"invalid {what} {value!r}: all digits, which resolvers take for a shortened IPv4 "
                         f"address; write the address in full or use a name")
    return value
