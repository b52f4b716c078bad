"""``edge provision``: set a device up in the field, then prove it works with the self-test.

Non-interactive (flags, or a TOML answers file with the same names) or interactive (asks for
what is missing). It writes the device config and its secrets with mode 0600 (owned by the
``edge`` user when run as root), installs the broker's CA certificate and the watchlist public
key, optionally makes the device's TLS key and a certificate signing request (CN = device id),
and runs the self-test. Re-running with the same answers changes nothing; ``--dry-run`` shows
what it would write.
"""

from __future__ import annotations

import argparse
import os
import pwd
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import ConfigError, EdgeError

ANSWERS = (
    "device_id", "broker", "ca", "client_cert", "client_key", "make_key", "username", "password_file",
    "watchlist_name", "watchlist_key", "camera", "camera_name", "width", "height", "face_distance_m", "hfov_deg",
)  # fmt: skip
REQUIRED = ("device_id", "broker", "watchlist_name", "watchlist_key", "camera")


@dataclass
class Plan:
    path: Path
    content: bytes
    mode: int
    action: str = ""


def _toml_str(value: object) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _answers(args: argparse.Namespace) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    if args.from_file:
        try:
            answers = tomllib.loads(Path(args.from_file).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{args.from_file}: cannot read the answers file ({exc})") from exc
        unknown = set(answers) - set(ANSWERS)
        if unknown:
            raise ConfigError(f"{args.from_file}: unknown keys {sorted(unknown)}; allowed: {', '.join(ANSWERS)}")
    for key in ANSWERS:
        value = getattr(args, key, None)
        if value not in (None, False):
            answers[key] = value
    if args.interactive:
        for key in REQUIRED:
            while not answers.get(key):
                answers[key] = input(f"{key.replace('_', ' ')}: ").strip()
    missing = [k for k in REQUIRED if not answers.get(k)]
    if missing:
        raise ConfigError("missing: " + ", ".join(f"--{k.replace('_', '-')}" for k in missing) + " (or use --interactive)")
    return answers


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise EdgeError(f"{what} {path}: cannot read ({exc.strerror or exc})") from exc


def make_key_and_csr(device_id: str) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem, csr.public_bytes(serialization.Encoding.PEM)


def plan(root: Path, a: dict[str, Any]) -> list[Plan]:
    from edge.publish import parse_host_port

    etc, data = root / "etc" / "edge", root / "var" / "lib" / "edge"
    host, port = parse_host_port(str(a["broker"]), default_port=8883 if a.get("ca") else 1883)
    out: list[Plan] = []
    tls = ""
    if a.get("ca"):
        out.append(Plan(etc / "ca.pem", _read(a["ca"], "CA certificate"), 0o644))
        cert = key = None
        if a.get("make_key"):
            key_path, csr_path = etc / "device.key", etc / "device.csr"
            if not key_path.exists():
                pem, csr = make_key_and_csr(str(a["device_id"]))
                out += [Plan(key_path, pem, 0o600), Plan(csr_path, csr, 0o644)]
            cert, key = etc / "device.pem", key_path
        elif a.get("client_cert"):
            out += [
                Plan(etc / "device.pem", _read(a["client_cert"], "client certificate"), 0o644),
                Plan(etc / "device.key", _read(a["client_key"], "client key"), 0o600),
            ]
            cert, key = etc / "device.pem", etc / "device.key"
        tls = f"tls = {{ ca = {_toml_str(etc / 'ca.pem')}"
        tls += f", cert = {_toml_str(cert)}, key = {_toml_str(key)} }}\n" if cert else " }\n"
    password = ""
    if a.get("password_file"):
        out.append(Plan(etc / "credentials" / "mqtt-password", _read(a["password_file"], "password file").strip() + b"\n", 0o600))
        password = f"password_file = {_toml_str(etc / 'credentials' / 'mqtt-password')}\n"
    out.append(Plan(etc / "watchlist.pub", _read(a["watchlist_key"], "watchlist public key"), 0o644))
    source = f"[[sources]]\ncamera = {_toml_str(a.get('camera_name') or 'cam1')}\nurl = {_toml_str(a['camera'])}\n"
    for k in ("width", "height", "face_distance_m", "hfov_deg"):
        if a.get(k):
            source += f"{k} = {a[k]}\n"
    config = (
        "# Written by `edge provision`; keys are documented in the README's configuration reference.\n"
        f"device_id = {_toml_str(a['device_id'])}\ndata_dir = {_toml_str(data)}\n\n{source}\n"
        f"[mqtt]\nhost = {_toml_str(host)}\nport = {port}\nusername = {_toml_str(a.get('username') or a['device_id'])}\n"
        f"{password}{tls}\n"
        f"[watchlist]\nname = {_toml_str(a['watchlist_name'])}\npublic_keys = [{_toml_str(etc / 'watchlist.pub')}]\n"
    )
    out.append(Plan(etc / "edge.toml", config.encode(), 0o600))
    return out


def apply(plans: list[Plan], root: Path, *, dry_run: bool) -> None:
    owner = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("edge")
            owner = (pw.pw_uid, pw.pw_gid)
        except KeyError:
            owner = None
    for p in plans:
        same = p.path.exists() and p.path.read_bytes() == p.content and (p.path.stat().st_mode & 0o777) == p.mode
        p.action = "unchanged" if same else ("would write" if dry_run else "written")
        if dry_run or same:
            continue
        p.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        tmp = p.path.with_name(p.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, p.mode)
        with os.fdopen(fd, "wb") as f:
            f.write(p.content)
        os.chmod(tmp, p.mode)
        if owner:
            os.chown(tmp, *owner)
        os.replace(tmp, p.path)
    data = root / "var" / "lib" / "edge"
    if not dry_run:
        data.mkdir(parents=True, exist_ok=True)
        data.chmod(0o700)
        (root / "etc" / "edge" / "credentials").mkdir(parents=True, exist_ok=True)
        (root / "etc" / "edge" / "credentials").chmod(0o700)
        if owner:
            os.chown(data, *owner)


def cmd_provision(args: argparse.Namespace) -> int:
    from edge.config import load_settings
    from edge.selftest import print_checklist, run_checks

    root = Path(args.root).resolve()
    answers = _answers(args)
    plans = plan(root, answers)
    apply(plans, root, dry_run=args.dry_run)
    for p in plans:
        print(f"{p.action:<12} {p.path} (mode {p.mode:o})")
    if any(p.path.name == "device.csr" and p.action == "written" for p in plans):
        print(
            f"\nsend {root / 'etc/edge/device.csr'} to the CA; install the signed certificate as {root / 'etc/edge/device.pem'}"
        )
    if args.dry_run:
        print("\ndry run: nothing written")
        return 0
    config = root / "etc" / "edge" / "edge.toml"
    settings = load_settings(config)
    if args.no_selftest:
        return 0
    print(f"\nself-test of {config}:")
    skip = {s.strip() for s in (args.skip or "").split(",") if s.strip()}
    return print_checklist(run_checks(settings, skip))


def add_parser(sub: Any) -> None:
    p = sub.add_parser("provision", help="set up a device: identity, broker and TLS, watchlist key, camera; then self-test")
    p.add_argument("--root", type=Path, default=Path("/"), help="target root (default /; a folder for tests and images)")
    p.add_argument("--from-file", type=Path, help="TOML answers file with the same names as these options")
    p.add_argument("--interactive", action="store_true", help="ask for whatever is missing")
    p.add_argument("--dry-run", action="store_true", help="show what would be written, write nothing")
    p.add_argument("--device-id", help="device identity: MQTT username and TLS client certificate CN")
    p.add_argument("--broker", help="HOST:PORT of the central broker")
    p.add_argument("--ca", help="CA certificate of the broker (turns TLS on)")
    p.add_argument("--client-cert", help="client certificate for mutual TLS (with --client-key)")
    p.add_argument("--client-key", help="private key of --client-cert")
    p.add_argument("--make-key", action="store_true", help="make the device's TLS key and a CSR (CN = device id)")
    p.add_argument("--username", help="MQTT username (default: the device id)")
    p.add_argument("--password-file", help="file holding the MQTT password (copied, mode 0600)")
    p.add_argument("--watchlist-name", help="name of the watchlist this device follows")
    p.add_argument("--watchlist-key", help="Ed25519 public key (PEM) that signs the watchlist")
    p.add_argument("--camera", help="camera: picamera2, a device index, rtsp://..., or a file/folder for bench tests")
    p.add_argument("--camera-name", help="camera name in hits (default cam1)")
    p.add_argument("--width", type=int, help="capture width")
    p.add_argument("--height", type=int, help="capture height")
    p.add_argument("--face-distance-m", type=float, help="typical lens-to-face distance, for the framing check")
    p.add_argument("--hfov-deg", type=float, help="lens horizontal field of view, for the framing check")
    p.add_argument("--no-selftest", action="store_true", help="write the files only")
    p.add_argument("--skip", help="self-test checks to skip, comma-separated (e.g. camera,clock)")
    p.set_defaults(func=cmd_provision)
