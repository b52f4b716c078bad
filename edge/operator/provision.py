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


# Interactive questions in order: (answer, question, default). A default of None means an answer is required;
# "" means it may be left empty. Questions that do not apply (TLS files without a CA, a resolution for a
# file camera, a field of view without a distance) are not asked.
QUESTIONS: tuple[tuple[str, str, str | None], ...] = (
    ("device_id", "device id (MQTT username and TLS certificate CN)", None),
    ("broker", "central broker HOST:PORT", None),
    ("ca", "broker CA certificate file for TLS (empty: no TLS)", ""),
    ("client_cert", "this device's client certificate file (empty: make a key and a CSR to send to the CA)", ""),
    ("client_key", "private key of that certificate", None),
    ("username", "MQTT username", "{device_id}"),
    ("password_file", "file holding the MQTT password (empty: none)", ""),
    ("watchlist_name", "watchlist this device follows", None),
    ("watchlist_key", "watchlist public key file (watchlist.pub)", None),
    ("camera", "camera: picamera2, a device index, rtsp://..., or a video file or folder", "picamera2"),
    ("camera_name", "camera name in hits", "cam1"),
    ("width", "capture width in pixels", "1920"),
    ("height", "capture height in pixels", "1080"),
    ("face_distance_m", "typical distance from the lens to the faces, metres (empty: no framing check)", ""),
    ("hfov_deg", "lens horizontal field of view, degrees", None),
)
_NUMBERS = {"width": int, "height": int, "face_distance_m": float, "hfov_deg": float}


def _applies(key: str, a: dict[str, Any]) -> bool:
    from edge.sources import is_camera_url

    if key == "client_cert":
        return bool(a.get("ca")) and not a.get("make_key")
    if key == "client_key":
        return bool(a.get("client_cert"))
    if key in ("width", "height"):
        return is_camera_url(str(a.get("camera", "")))
    if key == "hfov_deg":
        return bool(a.get("face_distance_m"))
    return True


def _ask(a: dict[str, Any]) -> None:
    """Ask for every answer that applies and is still missing, showing the default in brackets."""
    for key, question, default in QUESTIONS:
        if key in a or not _applies(key, a):
            continue
        shown = default.format(**a) if default else default
        prompt = f"{question}" + (f" [{shown}]" if shown else "") + ": "
        while True:
            try:
                reply = input(prompt).strip()
            except EOFError as exc:
                raise ConfigError(f"--interactive: no answer for {key.replace('_', ' ')} (input ended)") from exc
            value = reply or shown
            if value is None:
                print("  an answer is needed")
                continue
            if value and key in _NUMBERS:
                try:
                    a[key] = _NUMBERS[key](value)
                except ValueError:
                    print(f"  {value!r} is not a number")
                    continue
            elif value:
                a[key] = value
            break
        if key == "client_cert" and not a.get("client_cert"):
            a["make_key"] = True


def _answers(args: argparse.Namespace) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    if args.from_file:
        try:
            answers = tomllib.loads(Path(args.from_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{args.from_file}: cannot read the answers file ({exc})") from exc
        unknown = set(answers) - set(ANSWERS)
        if unknown:
            raise ConfigError(f"{args.from_file}: unknown keys {sorted(unknown)}; allowed: {', '.join(ANSWERS)}")
    for key in ANSWERS:
        value = getattr(args, key, None)
        if value not in (None, False):
            answers[key] = value
    if args.interactive:
        _ask(answers)
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
    if a.get("make_key"):  # with or without a CA yet: the CSR can go to the CA before the broker is known
        key_path, csr_path = etc / "device.key", etc / "device.csr"
        if not key_path.exists():
            pem, csr = make_key_and_csr(str(a["device_id"]))
            out += [Plan(key_path, pem, 0o600), Plan(csr_path, csr, 0o644)]
    if a.get("ca"):
        out.append(Plan(etc / "ca.pem", _read(a["ca"], "CA certificate"), 0o644))
        cert = key = None
        if a.get("make_key"):
            cert, key = etc / "device.pem", etc / "device.key"
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
    from edge.operator.system_setup import plan_system, run_step
    from edge.selftest import print_checklist, run_checks

    root = Path(args.root).resolve()
    answers = _answers(args)
    plans = plan(root, answers)
    steps, no_steps = plan_system(root, enable=not args.no_enable)
    users = [st for st in steps if st.command and st.command[0] == "useradd"]
    if not args.dry_run:
        for st in users:  # before the files, so they can be owned by the edge user
            run_step(st)
            print(f"{'done':<12} {st.what}")
    apply(plans, root, dry_run=args.dry_run)
    for p in plans:
        print(f"{p.action:<12} {p.path} (mode {p.mode:o})")
    csr = next((p for p in plans if p.path.name == "device.csr"), None)
    if csr is not None and csr.action != "unchanged":
        print(f"\nsend {csr.path} to the CA; install the signed certificate as {root / 'etc/edge/device.pem'}")
        if not answers.get("ca"):
            print("TLS stays off in the config until you re-run with --ca (the broker's CA certificate); the key is kept")
    if args.dry_run:
        for st in steps:
            print(f"{'would run':<12} {st.what}" + (f": {' '.join(st.command)}" if st.command else ""))
        print("\ndry run: nothing written" + (f"; {no_steps}" if no_steps else ""))
        return 0
    config = root / "etc" / "edge" / "edge.toml"
    settings = load_settings(config)
    code = 0
    if not args.no_selftest:
        print(f"\nself-test of {config}:")
        skip = {s.strip() for s in (args.skip or "").split(",") if s.strip()}
        code = print_checklist(run_checks(settings, skip))
    for st in steps:
        if st not in users:
            run_step(st)
            print(f"{'done':<12} {st.what}")
    if steps:
        print("start it now with: systemctl start edge   (logs: journalctl -u edge -f)")
    elif no_steps:
        print(f"\n{no_steps}")
    return code


def add_parser(sub: Any) -> None:
    p = sub.add_parser("provision", help="set up a device: identity, broker and TLS, watchlist key, camera; then self-test")
    p.add_argument("--root", type=Path, default=Path("/"), help="target root (default /; a folder for tests and images)")
    p.add_argument("--from-file", type=Path, help="TOML answers file with the same names as these options")
    p.add_argument("--interactive", action="store_true", help="ask for whatever is missing, showing the defaults")
    p.add_argument("--dry-run", action="store_true", help="show what would be written, write nothing")
    p.add_argument("--device-id", help="device identity: MQTT username and TLS client certificate CN")
    p.add_argument("--broker", help="HOST:PORT of the central broker")
    p.add_argument("--ca", help="CA certificate of the broker (turns TLS on)")
    p.add_argument("--client-cert", help="client certificate for mutual TLS (with --client-key)")
    p.add_argument("--client-key", help="private key of --client-cert")
    p.add_argument(
        "--make-key", action="store_true", help="make the device's TLS key and a CSR (CN = device id), kept on re-runs"
    )
    p.add_argument("--username", help="MQTT username (default: the device id)")
    p.add_argument("--password-file", help="file holding the MQTT password (copied, mode 0600)")
    p.add_argument("--watchlist-name", help="name of the watchlist this device follows")
    p.add_argument("--watchlist-key", help="Ed25519 public key (PEM) that signs the watchlist")
    p.add_argument("--camera", help="camera: picamera2, a device index, rtsp://..., or a file/folder for bench tests")
    p.add_argument("--camera-name", help="camera name in hits (default cam1)")
    p.add_argument("--width", type=int, help="capture width (cameras; the self-test checks it)")
    p.add_argument("--height", type=int, help="capture height (cameras; the self-test checks it)")
    p.add_argument("--face-distance-m", type=float, help="typical lens-to-face distance, for the framing check")
    p.add_argument("--hfov-deg", type=float, help="lens horizontal field of view, for the framing check")
    p.add_argument("--no-selftest", action="store_true", help="write the files only")
    p.add_argument(
        "--no-enable",
        action="store_true",
        help="do not create the edge service user or install and enable edge.service (done only as root with --root /)",
    )
    p.add_argument("--skip", help="self-test checks to skip, comma-separated (e.g. camera,clock)")
    p.set_defaults(func=cmd_provision)
