"""``edge watchlist``: keygen, build, sign, verify, show, publish and apply watchlist bundles."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import EdgeError
from edge.watchlist.bundle import Bundle, build_unsigned, iter_entries, read_bundle, sign_manifest, verify_bundle, write_bundle
from edge.watchlist.errors import BundleError
from edge.watchlist.keys import generate_keypair, key_id, load_private_key, trusted_keys
from edge.watchlist.manifest import now_utc, parse_manifest

if TYPE_CHECKING:
    from edge.config import RecognitionSettings
    from edge.models import ModelSpec

log = logging.getLogger(__name__)


def _embedding_spaces(models_dir: Path | None) -> dict[str, str]:
    from edge.models import load_manifest

    m = load_manifest(models_dir)
    return {name: str(s.extra.get("embedding_space", s.sha256)) for name, s in m.models.items() if s.kind == "embedder"}


def cmd_keygen(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise EdgeError(f"--out {out} is a file; give a folder for watchlist.key and watchlist.pub")
    there = [p.name for p in (out / "watchlist.key", out / "watchlist.pub") if p.exists()]
    if there:
        raise EdgeError(
            f"{out} already holds {' and '.join(there)}: a signing key is never overwritten "
            "(devices trust the old one); choose another --out, or move the old keys away first"
        )
    try:
        key, pub = generate_keypair(out)
    except OSError as exc:
        raise EdgeError(f"cannot write keys into {out} ({exc.strerror or exc})") from exc
    from edge.watchlist.keys import load_public_key

    print(f"private key {key} (mode 0600; keep it offline), public key {pub}, key id {key_id(load_public_key(pub))}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from edge.cli_args import analyser_from_args
    from edge.config import load_settings
    from edge.distant_views import DistantViews
    from edge.operator.enrol import enrol, requests_from_csv, requests_from_folder

    if bool(args.photos) == bool(args.csv):
        raise EdgeError("give exactly one of --photos DIR or --csv FILE")
    requests = requests_from_folder(args.photos) if args.photos else requests_from_csv(args.csv)
    analyser = analyser_from_args(args)
    views = DistantViews.from_settings(load_settings(args.config).recognition.enrol_views)
    report = enrol(analyser, requests, progress=not args.quiet, views=views)
    for photo, why in report.rejected:
        print(f"rejected {photo}: {why}")
    for eid in report.empty:
        print(f"entry {eid}: no usable photo, left out of the bundle")
    if report.empty and not args.allow_missing:
        print(
            f"not written: {len(report.empty)} of {len(requests)} entries would be left out ({', '.join(report.empty)}); "
            "give them usable photos, or pass --allow-missing to build without them"
        )
        return 1
    space = str(analyser.embedder.embedding_space)
    manifest, chunks = build_unsigned(
        report.entries,
        name=args.name,
        version=args.version,
        embedding_space=space,
        expires_at=now_utc() + timedelta(days=args.expires_days),
        dtype=args.dtype,
    )
    if args.key:
        data, sig = sign_manifest(manifest, load_private_key(args.key))
        write_bundle(args.out, data, chunks, sig)
    else:
        write_bundle(args.out, manifest.to_bytes(), chunks, None)
    n_photos = sum(len(r.photos) for r in requests)
    print(
        f"bundle {args.out}: watchlist {args.name} v{args.version}, {manifest.entry_count} entries, "
        f"{manifest.embedding_count} embeddings from {n_photos} photos ({len(report.rejected)} rejected), "
        f"{len(chunks)} chunks, {'signed' if args.key else 'UNSIGNED: sign it with `edge watchlist sign`'}; "
        f"{expiry(manifest.expires_at)}"
    )
    if report.empty:
        print(f"left out (--allow-missing): {', '.join(report.empty)}")
    note = analyser.threshold.explain(manifest.entry_count)
    if note:
        print(f"matching (with this machine's recognition.max_fpir; a device applies its own): {note}")
    return 0 if report.entries else 1


def expiry(expires_at: str) -> str:
    """'expires <time> (in N days)', or 'EXPIRED <time>': devices stop matching a bundle's entries when it expires."""
    from edge.watchlist.manifest import parse_time

    try:
        left = parse_time(expires_at, "expires_at") - now_utc()
    except BundleError:
        return f"expires {expires_at!r} (unreadable)"
    if left.total_seconds() <= 0:
        return f"EXPIRED {expires_at} (devices no longer match its entries; build and publish a new version)"
    days = left.total_seconds() / 86400
    return f"expires {expires_at} (in {days:.0f} days)" if days >= 1 else f"expires {expires_at} (in {days * 24:.0f} hours)"


def cmd_sign(args: argparse.Namespace) -> int:
    manifest_bytes = (args.bundle / "manifest.json").read_bytes()
    manifest = parse_manifest(manifest_bytes)
    data, sig = sign_manifest(manifest, load_private_key(args.key))
    (args.bundle / "manifest.json").write_bytes(data)
    (args.bundle / "manifest.sig").write_bytes(sig)
    print(f"signed {args.bundle} (watchlist {manifest.name} v{manifest.version}) with key {json.loads(data)['key_id']}")
    return 0


def verify_folder(
    folder: Path, public_keys: list[Path], *, current_version: int | None, models_dir: Path | None, embedder: str | None
) -> tuple[Any, list[str]]:
    """Check a bundle folder as a device would; returns (manifest, notes) or raises BundleError."""
    bundle = read_bundle(folder)
    keys = trusted_keys(public_keys)
    # Which local embedder to hold the bundle against: the one asked for, else one in the bundle's space.
    # (verify_bundle below checks the signature; here the manifest is only read.)
    offered = bundle.manifest()
    spaces = _embedding_spaces(models_dir)
    if embedder is not None:
        if embedder not in spaces:
            raise EdgeError(f"unknown embedder {embedder!r}; local embedders: {sorted(spaces)}")
        wanted: str | None = spaces[embedder]
    else:
        matching = [n for n, s in spaces.items() if s == offered.embedding_space]
        wanted = spaces[matching[0]] if matching else next(iter(spaces.values()), None)
    manifest, _ = verify_bundle(bundle, keys, embedding_space=wanted, current_version=current_version)
    embedder_names = [n for n, s in spaces.items() if s == manifest.embedding_space]
    notes = [
        f"signature verifies (key {manifest.key_id})",
        f"{len(manifest.chunks)} chunks, hashes and sizes match, each under 1 MiB",
        f"{manifest.entry_count} entries, {manifest.embedding_count} embeddings, {manifest.dimension}-d {manifest.dtype}",
        expiry(manifest.expires_at),
        f"embedding space matches local embedder {', '.join(embedder_names)}",
    ]
    if current_version is not None:
        notes.append(f"version {manifest.version} is newer than {current_version}")
    return manifest, notes


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        manifest, notes = verify_folder(
            args.bundle,
            args.public_key,
            current_version=args.current_version,
            models_dir=args.models_dir,
            embedder=args.embedder,
        )
    except BundleError as exc:
        print(f"REFUSED ({exc.reason}): {exc}")
        return 1
    print(f"OK: watchlist {manifest.name} v{manifest.version} would be applied")
    for n in notes:
        print(f"  {n}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    if args.bundle is not None:
        bundle = read_bundle(args.bundle) if (args.bundle / "manifest.sig").exists() else _unsigned(args.bundle)
        m = bundle.manifest()
        print(json.dumps(json.loads(bundle.manifest_bytes), indent=2))
        if args.entries:
            for e in iter_entries(bundle):
                print(f"{e.entry_id}\t{len(e.embeddings)} embeddings\t{e.label or ''}\t{e.expires_at or ''}")
        print(f"{m.entry_count} entries in {len(m.chunks)} chunks; {len(bundle.chunks)} chunk files present")
        print(expiry(m.expires_at))
        return 0
    from edge.config import load_settings
    from edge.db import connect
    from edge.watchlist.store import WatchlistStore

    if args.config is None:
        raise EdgeError("give a bundle folder or --config FILE")
    settings = load_settings(args.config)
    store = WatchlistStore(connect(settings.database))
    info = store.current(settings.watchlist.name)
    if info is None:
        print(f"no watchlist {settings.watchlist.name!r} applied on this device yet")
        return 1
    print(json.dumps(info.__dict__, indent=2))
    if args.entries:
        for batch in store.iter_entries(settings.watchlist.name):
            for eid, label, expires, _thr, vectors in batch:
                print(f"{eid}\t{len(vectors)} embeddings\t{label or ''}\t{expires or ''}")
    print(f"watchlist {info.name} v{info.version}: {info.entry_count} entries; {expiry(info.expires_at)}")
    return 0


def _unsigned(folder: Path) -> Bundle:
    data = (folder / "manifest.json").read_bytes()
    m = parse_manifest(data)
    chunks = {i: (folder / r.file).read_bytes() for i, r in enumerate(m.chunks) if (folder / r.file).is_file()}
    return Bundle(data, b"", chunks)


def _matching_note(spec: ModelSpec, rec: RecognitionSettings, entries: int) -> str | None:
    """What a watchlist of ``entries`` is matched at under ``rec`` (recognition settings), when not the shipped threshold."""
    from edge.errors import ModelError
    from edge.threshold import ThresholdPolicy

    try:
        policy = ThresholdPolicy.from_manifest(spec, override=rec.threshold, max_fpir=rec.max_fpir)
    except ModelError as exc:  # the bundle is applied all the same; the daemon refuses to start without a threshold
        return str(exc)
    return policy.explain(entries)


def cmd_apply(args: argparse.Namespace) -> int:
    from edge.config import load_settings
    from edge.db import connect
    from edge.models import load_manifest
    from edge.watchlist.store import WatchlistStore

    settings = load_settings(args.config)
    if not settings.watchlist.public_keys:
        raise EdgeError(f"{args.config}: watchlist.public_keys is empty; the device trusts no key")
    spec = load_manifest(settings.recognition.models_dir).get(settings.recognition.embedder, "embedder")
    store = WatchlistStore(connect(settings.database))
    try:
        bundle = read_bundle(args.bundle)
    except BundleError as exc:
        result = store.refuse(settings.watchlist.name, None, None, exc)
    else:
        result = store.apply(
            bundle,
            trusted_keys(settings.watchlist.public_keys),
            embedding_space=str(spec.extra.get("embedding_space", spec.sha256)),
            expected_name=settings.watchlist.name,
        )
    if result.ok:
        was = f"was v{result.previous_version}" if result.previous_version is not None else "the first on this device"
        print(f"applied watchlist {result.name} v{result.version} ({result.entry_count} entries), {was}")
        note = _matching_note(spec, settings.recognition, result.entry_count)
        if note:
            print(f"matching: {note}")
        return 0
    print(f"REFUSED ({result.reason}): {result.message}")
    return 1


def add_parser(sub: Any) -> None:
    wl = sub.add_parser("watchlist", help="build, sign, verify, publish and apply watchlist bundles")
    wsub = wl.add_subparsers(dest="watchlist_command", required=True, metavar="ACTION")

    p = wsub.add_parser("keygen", help="write an Ed25519 signing key pair (watchlist.key, watchlist.pub)")
    p.add_argument("--out", type=Path, required=True, help="folder for the two key files")
    p.set_defaults(func=cmd_keygen)

    from edge.cli_args import recognition_args

    p = wsub.add_parser("build", help="enrol photos through the device pipeline and write a bundle")
    p.add_argument("--photos", type=Path, help="folder with one subfolder of photos per entry (subfolder name = entry_id)")
    p.add_argument("--csv", type=Path, help="CSV entry_id,path[,label,case_ref,expires_at,threshold] instead of --photos")
    p.add_argument("--name", required=True, help="watchlist name")
    p.add_argument("--version", type=int, required=True, help="version number; devices refuse anything not newer")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument("--key", type=Path, help="private key to sign with (omit to sign elsewhere with `sign`)")
    p.add_argument("--expires-days", type=float, default=30.0, help="bundle lifetime in days (default 30)")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="embedding storage (default float16)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--allow-missing", action="store_true", help="build even when entries have no usable photo (they are listed and left out)"
    )
    recognition_args(p)
    p.set_defaults(func=cmd_build)

    p = wsub.add_parser("sign", help="sign an unsigned bundle (offline signing key)")
    p.add_argument("bundle", type=Path)
    p.add_argument("--key", type=Path, required=True, help="private key (PKCS#8 PEM)")
    p.set_defaults(func=cmd_sign)

    p = wsub.add_parser("verify", help="check a bundle exactly as a device would; exit 0 only if it would apply")
    p.add_argument("bundle", type=Path)
    p.add_argument("--public-key", type=Path, action="append", required=True, help="trusted public key (repeatable)")
    p.add_argument("--current-version", type=int, help="version the device holds: refuse replays and rollbacks")
    p.add_argument("--embedder", help="require this local embedder's embedding space")
    p.add_argument("--models-dir", type=Path, help="folder with models/manifest.json")
    p.set_defaults(func=cmd_verify)

    p = wsub.add_parser("show", help="print a bundle's manifest, or the watchlist a device holds")
    p.add_argument("bundle", type=Path, nargs="?")
    p.add_argument("--config", type=Path, help="device config: show its applied watchlist")
    p.add_argument("--entries", action="store_true", help="also list entries (id, embeddings, label, expiry)")
    p.set_defaults(func=cmd_show)

    from edge.operator.watchlist_publish import add_arguments

    p = wsub.add_parser("publish", help="verify a bundle, then publish it to the broker (retained, QoS 1)")
    add_arguments(p)

    p = wsub.add_parser("apply", help="apply a bundle to this device's store directly (no broker)")
    p.add_argument("bundle", type=Path)
    p.add_argument("--config", type=Path, required=True, help="device config (TOML)")
    p.set_defaults(func=cmd_apply)

    from edge.operator.revoke_cli import add_parsers as add_revoke_parsers

    add_revoke_parsers(wsub)
