"""Why a watchlist bundle cannot be applied: one class per refusal, each with the short code acks and audit carry."""

from __future__ import annotations

from edge.errors import EdgeError


class BundleError(EdgeError):
    """A bundle cannot be applied; ``reason`` is a short machine-readable code for acks and audit."""

    reason = "invalid"


class ManifestFormatError(BundleError):
    reason = "manifest_malformed"


class VersionRangeError(ManifestFormatError):
    reason = "version_out_of_range"


class SignatureError(BundleError):
    reason = "bad_signature"


class UnknownKeyError(BundleError):
    reason = "unknown_key"


class ReplayError(BundleError):
    reason = "replayed_version"


class RollbackError(BundleError):
    reason = "older_version"


class EmbeddingSpaceError(BundleError):
    reason = "wrong_embedding_space"


class ChunkMissingError(BundleError):
    reason = "missing_chunk"


class ChunkHashError(BundleError):
    reason = "chunk_hash_mismatch"


class ChunkTooLargeError(BundleError):
    reason = "chunk_too_large"


class ChunkFormatError(BundleError):
    reason = "chunk_malformed"


class BundleExpiredError(BundleError):
    reason = "expired"


class WrongWatchlistError(BundleError):
    reason = "wrong_watchlist"
