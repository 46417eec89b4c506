"""Typed settings: the environment (`Settings`), and the rules of every settings object kgpipe reads.

Settings objects are pydantic dataclasses with `STRICT`: types are strict (8.5 is no int, "no" no
bool, 5 no device name), NaN and infinity are refused, unknown keys are errors, and a failure
becomes one `KGFormatError` line naming each bad field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import ConfigDict, Field, StrictFloat, StrictInt, ValidationError
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

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


class Settings(BaseSettings):
    """Where kgpipe finds things, read once from `KGPIPE_*` environment variables, then an optional
    JSON file named by `KGPIPE_CONFIG` (environment variables win over the file, flags over both).

    This is the only place kgpipe reads its environment; it lives in `kg` (not `pipeline`) because
    every package needs it and `kg` imports nothing from the others.
    """

    model_config = SettingsConfigDict(env_prefix="KGPIPE_", extra="ignore")

    data: Path = Field(Path(__file__).resolve().parents[1] / "data", description="the bundled defaults")
    cache: Path = Field(Path.home() / ".cache" / "kgpipe", description="vectors computed for other KGs")
    text_model: Path | None = Field(None, description="a local Hugging Face checkpoint (default: MiniLM)")
    spacy_model: str | None = Field(None, description="a spaCy pipeline name or path")
    bundle: Path | None = Field(None, description="the bundle commands use when --bundle is not given")
    debug: bool = Field(False, description="print tracebacks of kgpipe's own bugs")
    store: str | None = Field(None, description="the store `kgpipe serve` searches instead of the bundle's")
    # `kgpipe serve`: what one server accepts (flags of the same names override these)
    api_max_body_bytes: int = Field(2_000_000, ge=1, description="largest request body (413 above)")
    api_max_text_chars: int = Field(100_000, ge=1, description="longest text (413 above)")
    api_max_items: int = Field(256, ge=1, description="texts or items in one request (413 above)")
    api_max_k: int = Field(1000, ge=1, description="most search hits asked for (422 above)")
    api_max_batch: int = Field(32, ge=1, description="items one model call batches from concurrent requests")
    api_max_wait_ms: float = Field(5.0, ge=0, description="how long a model call waits for more requests")
    api_max_queue: int = Field(512, ge=1, description="requests waiting per model before 429")
    api_timeout_s: float = Field(120.0, gt=0, description="a request unanswered by then gets 503")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = os.environ.get("KGPIPE_CONFIG")
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if config:
            if not Path(config).is_file():
                raise KGFormatError(
                    config,
                    None,
                    "KGPIPE_CONFIG names this settings file, and there is no such file",
                    "Give the path of a JSON file of settings, or unset KGPIPE_CONFIG",
                )
            sources += (JsonConfigSettingsSource(settings_cls, json_file=config),)
        return sources


def settings() -> Settings:
    """The settings as the environment gives them now (cheap: read on each call, so a test or a
    worker that changes `KGPIPE_*` sees it)."""
    try:
        return Settings()
    except ValidationError as e:
        raise KGFormatError("KGPIPE_* settings", None, describe(e), "Fix the environment variable") from e
