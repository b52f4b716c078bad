"""A real Mosquitto on a free loopback port, for tests and for the tools that drive a fleet against it.

Shared by ``tests/`` (through ``tests/broker.py``) and ``tools/fleet_sim.py`` / ``tools/faults.py``:
loopback only, persistence on (so a restarted broker keeps retained messages and persistent
sessions), stopped by PID.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    def __init__(
        self, workdir: Path, port: int | None = None, extra_conf: str = "", anonymous: bool = True, config: str | None = None
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.extra_conf = extra_conf  # settings after the listener line apply to it (TLS files, ACLs, queue limits)
        self.anonymous = anonymous
        self.config = config  # a whole configuration instead of the generated one (it must listen on self.port)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"mosquitto-{self.port}.log"

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        persistence = self.workdir / f"mosq-data-{self.port}"
        persistence.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            self.config
            if self.config is not None
            else f"listener {self.port} 127.0.0.1\n"
            f"allow_anonymous {str(self.anonymous).lower()}\n"
            "persistence true\n"
            f"persistence_location {persistence}/\n"
            "autosave_interval 1\n"
            # Run as whoever runs the tests: as root, mosquitto would switch to a user who cannot write here.
            f"user {getpass.getuser()}\n"
            f"{self.extra_conf}"
        )
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    self.starts += 1
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: see {self.log_path}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM: Mosquitto writes its persistence file (retained messages, sessions, queued QoS 1) on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the broker is not running")
        return self.proc.pid

    def rss_mb(self) -> float | None:
        """Resident memory of the broker process (Linux /proc), or None when it is not running."""
        if self.proc is None:
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            return None
        return None


@contextmanager
def running_broker(workdir: Path, **kwargs: object) -> Iterator[Broker]:
    b = Broker(workdir, **kwargs)  # type: ignore[arg-type]
    b.start()
    try:
        yield b
    finally:
        b.stop()
