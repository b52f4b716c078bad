"""A real Mosquitto on a free loopback port, started and stopped by the tests (shared with the tools)."""

from __future__ import annotations

from tools.mosquitto import Broker, free_port, running_broker

__all__ = ["Broker", "free_port", "running_broker"]
