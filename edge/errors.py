"""Exception classes, one per failure kind, so callers and tests can tell them apart."""

from __future__ import annotations


class EdgeError(Exception):
    """Base class for every error this package raises on purpose."""


class ModelError(EdgeError):
    """A model file or the model manifest cannot be used."""


class ModelMissingError(ModelError):
    """A model listed in the manifest is not on disk."""


class ModelHashMismatchError(ModelError):
    """A model file's sha256 differs from the manifest (altered, truncated or wrong version)."""


class ModelLoadError(ModelError):
    """The runtime refused a model file (corrupt flatbuffer, wrong shapes)."""


class AlignmentError(ModelError):
    """An embedder's manifest names an alignment template this build does not know."""


class RuntimeMissingError(EdgeError):
    """Neither ai_edge_litert nor tflite_runtime can be imported."""


class ImageDecodeError(EdgeError):
    """Bytes or a file could not be decoded into an image."""


class FrameError(EdgeError):
    """A frame has the wrong type, shape or dtype for the pipeline."""


class ConfigError(EdgeError):
    """The configuration is invalid; the message names the key."""


class ManifestError(EdgeError):
    """An evaluation manifest (CSV) is malformed."""


class InputFormatError(EdgeError):
    """Bytes from outside the process (a file, an MQTT payload) are not well-formed JSON or TOML."""
