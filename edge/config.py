"""Configuration: one pydantic-settings model, read from a TOML file and ``EDGE_*`` variables.

Unknown keys are refused (``extra="forbid"``) so a misspelt setting fails at start with
the key's name instead of silently keeping a default.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from edge.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DetectorSettings(_Section):
    model: str = Field(
        "blazeface-full-range",
        description="Detector model from models/manifest.json: blazeface-full-range (up to ~5 m) or "
        "blazeface-short-range (within ~2 m).",
    )
    score_threshold: float | None = Field(
        None,
        ge=0.05,
        le=0.99,
        description="Detector confidence to accept a face; empty = the model's calibrated value.",
    )
    close_face_retry: bool = Field(
        True,
        description="When nothing is found, retry with the frame shrunk inside a border so faces that fill "
        "the frame (close-ups, tight crops) are found.",
    )


class QualitySettings(_Section):
    min_size_px: float = Field(24.0, ge=8, description="Faces narrower than this (frame pixels) are not matched.")
    min_sharpness: float = Field(
        10.0, ge=0, description="Minimum variance of the Laplacian of the aligned crop; blurrier faces are not matched."
    )
    max_abs_yaw: float = Field(60.0, ge=0, le=90, description="Faces turned further than this (degrees) are not matched.")
    min_detector_score: float = Field(0.6, ge=0, le=1, description="Minimum detector score to match a face.")


class RecognitionSettings(_Section):
    embedder: str = Field("mobilefacenet", description="Embedder model from models/manifest.json.")
    accelerator: Literal["auto", "cpu", "edgetpu"] = Field(
        "auto",
        description="auto: the Edge TPU when a Coral and an _edgetpu model variant exist, else the CPU; "
        "cpu: never the TPU; edgetpu: the TPU, with a warning and the CPU when it is missing.",
    )
    threads: int = Field(2, ge=1, le=16, description="CPU threads per model interpreter.")
    models_dir: Path | None = Field(
        None, description="Folder holding models/manifest.json; empty = $EDGE_MODELS_DIR or the installed models."
    )
    flip: bool = Field(True, description="Average each face's embedding with its mirror image's (more robust).")
    threshold: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="Override the embedder's calibrated base cosine threshold. Lowering it raises false matches.",
    )
    detector: DetectorSettings = Field(default_factory=DetectorSettings, description="Face detector.")
    quality: QualitySettings = Field(default_factory=QualitySettings, description="Quality gate before matching.")


class WatchlistSettings(_Section):
    name: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Watchlist this device follows.")
    public_keys: list[Path] = Field(
        default_factory=list,
        description="Ed25519 public keys (PEM) whose signatures the device trusts; several allow key rotation.",
    )
    assemble_timeout_s: float = Field(
        300.0, gt=0, description="How long to wait for all chunks of a new version before refusing it."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGE_", env_nested_delimiter="__", extra="forbid")

    device_id: str = Field("edge-dev", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Device identity (MQTT username).")
    data_dir: Path = Field(Path("/var/lib/edge"), description="Where the device keeps its SQLite stores.")
    recognition: RecognitionSettings = Field(default_factory=RecognitionSettings, description="Recognition pipeline.")
    watchlist: WatchlistSettings = Field(default_factory=WatchlistSettings, description="Watchlist sync and trust.")

    @property
    def database(self) -> Path:
        return self.data_dir / "edge.db"


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check its spelling against the README's configuration reference)")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Settings from a TOML file (if given), ``EDGE_*`` variables and keyword overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file {path} not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc
