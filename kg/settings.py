"""Typed settings: every settings object kgpipe reads is a pydantic dataclass with these rules.

Types are strict (8.5 is no int, "no" no bool, 5 no device name), NaN and infinity are refused,
unknown keys are errors, and a failure becomes one `KGFormatError` line naming each bad field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, TypeVar

from pydantic import ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from kg.errors import KGFormatError

# the model_config of every settings dataclass
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_assignment=True)

PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
PositiveFloat = Annotated[StrictFloat, Field(gt=0)]
NonNegativeFloat = Annotated[StrictFloat, Field(ge=0)]
Share = Annotated[StrictFloat, Field(ge=0, le=1)]  # a fraction of something, 0 to 1

T = TypeVar("T")


def describe(error: ValidationError) -> str:
    """One line for every field pydantic refused: `dim=8.5: Input should be a valid integer`."""
    parts = []
    for e in error.errors(include_url=False):
        field = ".".join(str(x) for x in e["loc"])
        if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            parts.append(f"unknown setting {field!r}")
            continue
        if e["type"] == "missing":
            parts.append(f"{field} is missing")
            continue
        message = e["msg"].replace("Input should be", "should be").removeprefix("Value error, ")
        parts.append(f"{field}={e['input']!r}: {message}" if field else message)
    return "; ".join(parts)


def validate(cls: type[T], values: object, where: object, fix: str) -> T:
    """`cls(**values)`, or a `KGFormatError` at `where` naming each refused field and `fix`."""
    if not isinstance(values, Mapping):
        raise KGFormatError(where, None, f"expected an object of settings, got {values!r}"[:200], fix)
    try:
        return cls(**values)
    except ValidationError as e:
        raise KGFormatError(where, None, describe(e), fix) from e


def known_fields(cls: type) -> list[str]:
    """The setting names of a settings dataclass, for messages."""
    return sorted(getattr(cls, "__dataclass_fields__", {}))
