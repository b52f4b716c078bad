"""Configuration: one pydantic-settings model, read from a TOML file and ``EDGE_*`` variables.

Unknown keys are refused (``extra="forbid"``) so a misspelt setting fails at start with
the key's name instead of silently keeping a default.
"""

from __future__ import annotations

import logging
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from edge.detectors.yunet import YuNetSettings
from edge.errors import ConfigError

log = logging.getLogger(__name__)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DetectorSettings(_Section):
    model: str = Field(
        "yunet",
        description="Detector model from models/manifest.json: yunet (small, distant faces; 5 landmarks), "
        "yunet-int8 (the same network fully integer: about 2x faster on a CPU, for Edge TPU builds), "
        "blazeface-full-range (up to ~5 m) or blazeface-short-range (within ~2 m).",
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
    min_face_px: float | None = Field(
        30.0,
        ge=8,
        description="Smallest face width (frame pixels) to find. When the full-frame pass cannot see faces this small "
        "(at 1080p it sees ~160 px and up), a fine pass runs the detector at native resolution, on the whole frame "
        "or on the camera's `regions`; smaller values cost more time. Empty = full-frame pass only.",
    )
    yunet: YuNetSettings = Field(default_factory=YuNetSettings, description="Settings of the yunet detector.")


class QualitySettings(_Section):
    min_size_px: float = Field(24.0, ge=8, description="Faces narrower than this (frame pixels) are not matched.")
    min_sharpness: float = Field(
        10.0, ge=0, description="Minimum variance of the Laplacian of the aligned crop; blurrier faces are not matched."
    )
    max_abs_yaw: float = Field(60.0, ge=0, le=90, description="Faces turned further than this (degrees) are not matched.")
    min_detector_score: float = Field(0.6, ge=0, le=1, description="Minimum detector score to match a face.")


ENROL_VIEW_PX = (16, 256)  # the narrowest and widest enrolment view (face width, px)


class EnrolViewSettings(_Section):
    sizes: list[Annotated[int, Field(ge=ENROL_VIEW_PX[0], le=ENROL_VIEW_PX[1])]] = Field(
        default_factory=lambda: [32, 40, 48],
        description="Enrolment (watchlist build, web console) also stores each photo's face as a distant camera sees "
        "it: shrunk to each of these widths (px; only widths the face is wider than) in a plain full-HD scene, then "
        "found, aligned and embedded as a probe is; an entry scores the max over its embeddings, so 30-60 px faces "
        "match a sharp photo better. edge eval and edge calibrate enrol the same way: the shipped threshold is "
        "calibrated with these values (change them and re-run edge calibrate). Each size adds one embedding per photo: "
        "the device's matcher time and memory grow with it. Empty: the photo's embedding only.",
    )
    jpeg_quality: int | None = Field(
        80, ge=1, le=100, description="JPEG quality each distant view is recorded at, as a camera stream is; empty: not encoded."
    )


class RecognitionSettings(_Section):
    embedder: str = Field("mobilefacenet", description="Embedder model from models/manifest.json.")
    accelerator: Literal["auto", "cpu", "edgetpu"] = Field(
        "auto",
        description="auto: the Edge TPU when a Coral and an _edgetpu model variant exist, else the CPU; "
        "cpu: never the TPU; edgetpu: the TPU, with a warning and the CPU when it is missing.",
    )
    threads: int = Field(
        0,
        ge=0,
        le=16,
        description="CPU threads per model interpreter; 0 = half the machine's cores, at least 1 (1 on a 2-core "
        "machine, 2 on a 4-core Raspberry Pi 5): with `pipeline.stage_threads` detection and embedding run at the "
        "same time, one interpreter each, so more threads than that only wait for one another (measured on 2 cores: "
        "2 threads per model spent a quarter more CPU on a stream than 1, for no more frames per second).",
    )

    def model_threads(self) -> int:
        """The threads each interpreter gets: ``threads``, or half the cores when it is 0."""
        return self.threads or max(1, (os.cpu_count() or 2) // 2)

    models_dir: Path | None = Field(
        None,
        description="Folder holding manifest.json and the model files; "
        "empty = $EDGE_MODELS_DIR, else the models installed with edge.",
    )
    flip: bool = Field(True, description="Average each face's embedding with its mirror image's (more robust).")
    threshold: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="Override the embedder's calibrated base cosine threshold. Lowering it raises false matches.",
    )
    max_fpir: float = Field(
        0.01,
        gt=0,
        le=0.1,
        description="Largest share of passers-by on no list that may match some entry (false positive identification "
        "rate). Each face is compared with every entry, so this share grows with the watchlist (about entries x the "
        "pair false-accept rate the threshold was calibrated for): a watchlist too large for the calibrated threshold "
        "to hold it is matched at the stricter calibrated threshold that does (`edge calibrate` stores them). A smaller "
        "watchlist is never matched below the calibrated threshold. Ignored with recognition.threshold.",
    )
    detector: DetectorSettings = Field(default_factory=DetectorSettings, description="Face detector.")
    quality: QualitySettings = Field(default_factory=QualitySettings, description="Quality gate before matching.")
    enrol_views: EnrolViewSettings = Field(
        default_factory=EnrolViewSettings, description="Extra enrolment embeddings of each face as seen from afar."
    )


class WatchlistSettings(_Section):
    name: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Watchlist this device follows.")
    public_keys: list[Path] = Field(
        default_factory=list,
        description="Ed25519 public keys (PEM) whose signatures the device trusts; several allow key rotation.",
    )
    assemble_timeout_s: float = Field(
        300.0, gt=0, description="How long to wait for all chunks of a new version before refusing it."
    )


class SourceSettings(_Section):
    camera: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Camera name, as sent in hits and status.")
    url: str = Field(
        ...,
        description="Where frames come from: a video file path, rtsp://..., a device index (0), a folder of images, "
        "or 'picamera2' for the Raspberry Pi camera.",
    )
    stop_at_end: bool = Field(
        False, description="File or folder sources: stop the daemon after the last frame's hits are delivered."
    )
    stills: bool = Field(
        True,
        description="Folder sources: each image is a separate photo (each face its own track, a hit at the threshold, "
        "no cooldown); false for a folder of consecutive video frames.",
    )
    fps_cap: float | None = Field(None, gt=0, le=120, description="Process at most this many frames per second.")
    width: int | None = Field(None, ge=64, le=7680, description="Requested capture width (camera sources).")
    height: int | None = Field(None, ge=64, le=4320, description="Requested capture height (camera sources).")
    reopen_max_backoff_s: float = Field(
        30.0, gt=0, description="A failed source is reopened with back-off doubling up to this many seconds."
    )
    face_distance_m: float | None = Field(
        None, gt=0, le=100, description="Typical distance from the lens to the faces to recognise (framing check)."
    )
    hfov_deg: float | None = Field(
        None, gt=1, lt=180, description="The lens's horizontal field of view in degrees (framing check)."
    )
    regions: list[tuple[int, int, int, int]] = Field(
        default_factory=list,
        description="Regions of interest [x, y, w, h] (frame pixels) where small, distant faces are searched "
        "(e.g. the walkway); empty = the whole frame. Large faces are found anywhere. Fewer pixels, faster frames.",
    )

    @model_validator(mode="after")
    def _regions_are_boxes(self) -> SourceSettings:
        for i, (x, y, w, h) in enumerate(self.regions):
            if x < 0 or y < 0 or w < 8 or h < 8:
                raise ValueError(f"regions[{i}] = [{x}, {y}, {w}, {h}]: needs x, y >= 0 and w, h >= 8 (frame pixels)")
            if self.width and self.height and (x + w > self.width or y + h > self.height):
                raise ValueError(f"regions[{i}] = [{x}, {y}, {w}, {h}] reaches outside the {self.width}x{self.height} frame")
        return self


class TlsSettings(_Section):
    ca: Path = Field(..., description="CA certificate (PEM) that signed the broker's certificate.")
    cert: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS; its CN is the device id.")
    key: Path | None = Field(None, description="Private key of the client certificate.")

    @model_validator(mode="after")
    def _cert_and_key(self) -> TlsSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls.cert and tls.key go together: give both or neither")
        return self


class MqttSettings(_Section):
    enabled: bool = Field(True, description="false: print hits to the console instead of publishing (demo, bench).")
    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is the usual TLS port).")
    tls: TlsSettings | Literal[False] = Field(False, description="false, or a table with ca, cert, key.")
    username: str | None = Field(None, description="MQTT username; by convention the device id.")
    password_file: Path | None = Field(
        None,
        description="File holding the MQTT password; empty = $CREDENTIALS_DIRECTORY/mqtt-password when systemd "
        "passes credentials.",
    )
    keepalive_s: int = Field(30, ge=5, le=600, description="MQTT keepalive; the last will fires after ~1.5x this.")
    status_interval_s: float = Field(30.0, ge=1, description="Seconds between status heartbeats.")
    max_inflight: int = Field(50, ge=1, le=1000, description="Hits sent but not yet acknowledged, at most.")

    def password(self) -> str | None:
        path = self.password_file
        if path is None:
            creds = os.environ.get("CREDENTIALS_DIRECTORY")
            if creds and (Path(creds) / "mqtt-password").is_file():
                path = Path(creds) / "mqtt-password"
        if path is None:
            return None
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"mqtt.password_file: cannot read {path} ({exc.strerror or exc})") from exc


class TrackingSettings(_Section):
    iou_match: float = Field(0.3, gt=0, lt=1, description="Overlap needed to continue a track in the next frame.")
    max_gap_s: float = Field(1.0, gt=0, description="A track not seen for this long ends.")
    face_speed: float = Field(
        8.0,
        ge=0,
        le=100,
        description="Face widths per second a face may move between two detections and still continue its track when "
        "the boxes no longer overlap (a walker crosses 3-9 face widths a second, a new track has no speed yet); only "
        "where that face and that track have no other candidate within reach. 0: overlap only.",
    )
    min_frames: int = Field(2, ge=1, le=50, description="Frames that must agree on the same entry before a track raises a hit.")
    single_frame_margin: float = Field(
        0.08,
        ge=0,
        le=1,
        description="A track that only ever had one frame (a still image) may still hit if its score clears the "
        "threshold by this much.",
    )
    realert_s: float = Field(
        60.0, ge=0, description="Cooldown per (camera, entry) across tracks: no second hit within this many seconds."
    )
    embed_every: int = Field(
        5,
        ge=1,
        le=1000,
        description="An undecided track's face is embedded again at least every this many frames (besides its "
        "first face, a clearly better face, and every frame while a hit awaits confirmation).",
    )
    no_match_after: int = Field(
        3,
        ge=1,
        le=100,
        description="A track whose this many embedded faces matched no entry is decided (not embedded again "
        "unless a clearly better face shows up).",
    )
    no_match_recheck: int = Field(
        30,
        ge=0,
        le=10000,
        description="A track decided as no match is looked at again every this many frames (a face turning "
        "towards the camera, an occluder leaving); 0: never.",
    )
    better_face: float = Field(
        1.3,
        ge=1,
        le=10,
        description="A face this many times wider than the best one embedded so far for its track (or as wide and "
        "half as turned away, or twice as sharp) is embedded again, also for a track decided as no match.",
    )


class MotionSettings(_Section):
    width: int = Field(160, ge=32, le=640, description="Width (pixels) of the grey copy frames are compared on.")
    threshold: int = Field(
        14, ge=1, le=255, description="Grey-level difference (0-255, on the blurred small copy) that counts as a change."
    )
    min_pixels: int = Field(4, ge=1, description="Changed pixels of the small copy a change needs (fewer are noise or a leaf).")
    pad_px: int = Field(48, ge=0, le=512, description="Frame pixels added around each change before the fine pass looks there.")


class PipelineSettings(_Section):
    motion_gate: bool = Field(
        True,
        description="Compare each frame with the previous one and run the detector only when something changed "
        "(tracks stay alive on static frames); false: detect on every frame.",
    )
    keyframe_every: int = Field(
        10,
        ge=1,
        le=1000,
        description="Detect at least every this many frames even when nothing changed (on an idle camera, with no "
        "live track, every this many times idle_look_every frames).",
    )
    idle_look_every: int = Field(
        3,
        ge=1,
        le=30,
        description="While a camera has no live track and the last frame the change gate examined showed no change, "
        "the gate examines only every this many frames (a JPEG frame not examined is not decoded at all); a change, "
        "a live track or a keyframe: every frame again. 1: every frame. At 15 frames/s, 3 delays the first look at "
        "someone walking in by at most 2 frames (133 ms).",
    )
    busy_look_every: int = Field(
        2,
        ge=1,
        le=30,
        description="While a camera has live tracks and none of them needs a look now (a hit to confirm, a crossing, "
        "the regular follow every track_every frames), the change gate examines only every this many frames (the "
        "others are not decoded): someone new walking in is found a frame later. 1: every frame.",
    )
    fine_every: int = Field(
        150,
        ge=1,
        le=100000,
        description="The fine pass for small faces looks only at changed parts of the frame (within the camera's "
        "`regions`), and at the whole frame (or all `regions`) at least every this many frames.",
    )
    new_look_every: int = Field(
        3,
        ge=1,
        le=30,
        description="A change that no known face explains gets the fine pass at most every this many frames: someone "
        "walking in is found a frame or two later, and a moving thing without a usable face (a back, a bag, a face the "
        "quality gate refuses) costs one pass in this many frames instead of one each. 1: every such frame.",
    )
    track_every: int = Field(
        5,
        ge=1,
        le=100,
        description="While every change is where a known face is expected, follow the known faces only every this "
        "many frames (tracks are predicted in between; undecided faces are embedded on these frames), and in between "
        "only a face whose hit awaits confirmation; 1: detect on every changed frame.",
    )
    fine_window_px: int = Field(
        384,
        ge=64,
        le=4096,
        description="Side (frame pixels) of the square windows the fine pass examines around changes; one size keeps "
        "one detector input size (384 = the detector's own 192 px input at the default min_face_px).",
    )
    stage_threads: bool = Field(
        True,
        description="Run detection and embedding/matching in two threads (two cores busy on a stream); "
        "false: one thread does both, in turn.",
    )
    motion: MotionSettings = Field(default_factory=MotionSettings, description="Change detection.")


class OutboxSettings(_Section):
    max_rows: int = Field(200_000, ge=100, description="Undelivered messages kept at most; the oldest go first.")
    max_age_days: float = Field(14.0, gt=0, description="Undelivered messages older than this are dropped (and audited).")


class PrivacySettings(_Section):
    thumbnails: bool = Field(
        False,
        description="Send a face-crop JPEG of each hit. Off by default: it puts a face image of the person "
        "(possibly a false match) on the broker and in every subscriber's store.",
    )
    thumbnail_px: int = Field(112, ge=48, le=256, description="Thumbnail size in pixels.")
    retention_days: float = Field(
        30.0, gt=0, description="Delivered hits and audit records older than this are purged (the purge is audited)."
    )


class DaemonSettings(_Section):
    queue_frames: int = Field(4, ge=1, le=64, description="Frames waiting for the pipeline; live sources drop the oldest.")
    drain_timeout_s: float = Field(
        600.0, ge=0, description="stop_at_end: how long to wait for the broker to take the last hits before exiting."
    )
    watchlist_wait_s: float = Field(
        30.0,
        ge=0,
        description="With no watchlist applied yet, recordings wait this long for one to arrive over MQTT "
        "before their frames are processed (live cameras never wait).",
    )
    watchdog_stall_s: float = Field(
        60.0, gt=0, description="No pipeline progress for this long stops the systemd watchdog pings."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGE_", env_nested_delimiter="__", extra="forbid")

    device_id: str = Field("edge-dev", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Device identity (MQTT username).")
    data_dir: Path = Field(Path("/var/lib/edge"), description="Where the device keeps its SQLite database.")
    sources: list[SourceSettings] = Field(default_factory=list, description="Cameras ([[sources]] tables).")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="Broker connection.")
    recognition: RecognitionSettings = Field(default_factory=RecognitionSettings, description="Recognition pipeline.")
    watchlist: WatchlistSettings = Field(default_factory=WatchlistSettings, description="Watchlist sync and trust.")
    tracking: TrackingSettings = Field(default_factory=TrackingSettings, description="Tracking and alert policy.")
    outbox: OutboxSettings = Field(default_factory=OutboxSettings, description="Store-and-forward of hits.")
    privacy: PrivacySettings = Field(default_factory=PrivacySettings, description="Data minimisation.")
    daemon: DaemonSettings = Field(default_factory=DaemonSettings, description="Daemon behaviour.")
    pipeline: PipelineSettings = Field(
        default_factory=PipelineSettings, description="Where the CPU goes: change gating, fine-pass schedule, stages."
    )

    @model_validator(mode="after")
    def _unique_cameras(self) -> Settings:
        names = [s.camera for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"sources: camera names must be unique, repeated: {dup}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment over the file, so a systemd drop-in can override one key without editing the file.
        path = _TOML_PATH.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def database(self) -> Path:
        return self.data_dir / "edge.db"


_TOML_PATH: ContextVar[Path | None] = ContextVar("edge_toml_path", default=None)


ENV_PREFIX = "EDGE_"
# EDGE_* names read elsewhere than the settings model (so not reported as misspelt settings).
OTHER_ENV_NAMES = frozenset({"EDGE_MODELS_DIR", "EDGE_DEV_DATA", "EDGE_DEV_FACES"})


def _env_names(model: type[BaseModel], prefix: str = ENV_PREFIX) -> set[str]:
    """Every environment name that sets a setting: EDGE_KEY, EDGE_SECTION, EDGE_SECTION__KEY, ..."""
    names = set()
    for name, field in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        names.add(env)
        for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                names |= _env_names(arg, env + "__")
    return names


def unknown_env_names(environ: dict[str, str] | None = None) -> dict[str, list[str]]:
    """EDGE_* variables that set nothing (misspelt), each with the closest real names."""
    import difflib

    known = _env_names(Settings)
    env = os.environ if environ is None else environ
    return {
        name: difflib.get_close_matches(name.upper(), sorted(known), n=1)
        for name in env
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in known | OTHER_ENV_NAMES
    }


def _env_name_for(loc: tuple[int | str, ...]) -> str | None:
    """The EDGE_* variable that supplied the value at ``loc`` (or a table holding it), if one is set."""
    upper = {k.upper() for k in os.environ}
    for n in range(len(loc), 0, -1):
        name = ENV_PREFIX + "__".join(str(p).upper() for p in loc[:n])
        if name in upper:
            return name
    return None


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    from_env = 0
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        env = _env_name_for(err["loc"])
        where = f" (from the environment variable {env})" if env else ""
        from_env += env is not None
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key{where} (check its spelling against the README's configuration reference)")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r}){where}")
    if from_env == len(lines):
        head = "invalid configuration in the environment:"
    elif from_env:
        head = f"invalid configuration in {source} and the environment:"
    else:
        head = f"invalid configuration in {source}:"
    return "\n".join([head, *lines])


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Settings from ``EDGE_*`` variables over a TOML file (if given), with keyword overrides on top."""
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            # Bytes decoded as the TOML source below reads them: read_text would turn a bare CR into a newline.
            tomllib.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file {path} not found") from exc
        except OSError as exc:
            raise ConfigError(f"configuration file {path} cannot be read ({exc.strerror or exc})") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not UTF-8 text ({exc})") from exc
        except ValueError as exc:  # TOMLDecodeError, and a number beyond Python's integer digit limit
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc
        except RecursionError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: nested too deeply") from exc
    for name, close in unknown_env_names().items():
        log.warning("environment variable %s sets no setting and is ignored%s", name,
                    f" (did you mean {close[0]}?)" if close else "")  # fmt: skip
    token = _TOML_PATH.set(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc
    except SettingsError as exc:  # an EDGE_* variable with malformed JSON for a list or table
        raise ConfigError(f"invalid configuration in the environment: {exc} ({exc.__cause__})") from exc
    finally:
        _TOML_PATH.reset(token)
