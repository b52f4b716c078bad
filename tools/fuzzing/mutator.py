"""Structural and byte-wise mutation of fuzz inputs: JSON values, types, lengths, raw tokens."""

from __future__ import annotations

import copy
import json
import math
import random
from typing import Any

# --- mutation -----------------------------------------------------------------------------------

INTERESTING_INTS = [0, 1, -1, 2, 7, 8, 63, 64, 65, 255, 256, 4096, 4097, 65535, 65536, 2**31 - 1, 2**31, 2**32, 2**53 + 1,
                    2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30]  # fmt: skip
INTERESTING_FLOATS = [0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 1.0000001, 1e-320, 1e308, -1e308, math.inf, -math.inf, math.nan]
INTERESTING_STRS = [
    "", " ", "a", "A" * 65, "x" * 5000, "\x00", "\n", "é", "日本", "\U0001f600", "\ud800", "\udfff", "../../etc/passwd",
    "/", "0", "-1", "1e999", "true", "null", "NaN", "2026-11-22T10:00:00.000Z", "2026-11-22T10:00:00", "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999Z", "0001-01-01T00:00:00+00:00", "2026-02-30T00:00:00Z", "2026-11-22T10:00:00+25:00", "Z",
    "edge/v1/#", "+", "chunks/00000.bin", "chunks/00001.bin", "float16", "float32", "float64", "a" * 64, "0" * 64,
]  # fmt: skip
RAW_TOKENS = [b"1" * 5000, b"[" * 3000, b"{" * 2000, b'{"a":' * 1500, b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-0",
              b'"\\ud800"', b'"\\udc00\\ud800"', b"\xff\xfe", b"\xef\xbb\xbf", b"\x00", b"\\", b'"', b"null", b"true",
              b"[]", b"{}", b",", b":", b"]", b"}", b"\x80", b"\xc3\x28", b"\xf4\x90\x80\x80", b"\xed\xa0\x80"]  # fmt: skip


class Mutator:
    """Byte-level and JSON-structure mutations, driven by one seeded ``random.Random``."""

    def __init__(self, rng: random.Random, vocabulary: list[str]) -> None:
        self.rng = rng
        self.vocabulary = vocabulary  # keys seen in the seeds, so added keys are often real ones

    # bytes

    def random_bytes(self, max_len: int = 512) -> bytes:
        n = self.rng.choice([0, 1, 2, 8, 64, self.rng.randrange(max_len + 1)])
        return self.rng.randbytes(n)

    def mutate_bytes(self, data: bytes, others: list[bytes] | None = None) -> bytes:
        buf = bytearray(data)
        for _ in range(self.rng.choice([1, 1, 1, 2, 3, 5, 8])):
            op = self.rng.randrange(10)
            pos = self.rng.randrange(len(buf) + 1)
            if op == 0 and buf:  # flip a bit
                i = min(pos, len(buf) - 1)
                buf[i] ^= 1 << self.rng.randrange(8)
            elif op == 1 and buf:  # set a byte
                buf[min(pos, len(buf) - 1)] = self.rng.randrange(256)
            elif op == 2:  # insert random bytes
                buf[pos:pos] = self.rng.randbytes(self.rng.choice([1, 2, 4, 16]))
            elif op == 3 and buf:  # delete a range
                end = min(len(buf), pos + self.rng.choice([1, 2, 8, 64, 1024]))
                del buf[pos:end]
            elif op == 4 and buf:  # duplicate a range
                end = min(len(buf), pos + self.rng.choice([1, 8, 64, 512]))
                buf[pos:pos] = buf[pos:end]
            elif op == 5:  # truncate
                del buf[pos:]
            elif op == 6:  # insert a token known to upset parsers
                buf[pos:pos] = self.rng.choice(RAW_TOKENS)
            elif op == 7 and others:  # splice with another input
                other = self.rng.choice(others)
                cut = self.rng.randrange(len(other) + 1)
                buf = buf[:pos] + bytearray(other[cut:])
            elif op == 8 and buf:  # overwrite with an interesting number in ASCII
                text = str(self.rng.choice(INTERESTING_INTS + INTERESTING_FLOATS)).encode()
                buf[pos : pos + len(text)] = text
            elif op == 9 and len(buf) > 1:  # swap two bytes
                j = self.rng.randrange(len(buf))
                i = min(pos, len(buf) - 1)
                buf[i], buf[j] = buf[j], buf[i]
        return bytes(buf)

    # JSON values

    def value(self, depth: int = 0) -> Any:
        r = self.rng.randrange(12)
        if r == 0:
            return None
        if r == 1:
            return self.rng.random() < 0.5
        if r in (2, 3):
            return self.rng.choice(INTERESTING_INTS) if self.rng.random() < 0.7 else self.rng.randrange(-1000, 1000)
        if r in (4, 5):
            return self.rng.choice(INTERESTING_FLOATS) if self.rng.random() < 0.7 else self.rng.uniform(-2, 2)
        if r in (6, 7, 8):
            if self.rng.random() < 0.7:
                return self.rng.choice(INTERESTING_STRS)
            return "".join(chr(self.rng.randrange(0x20, 0x2FF)) for _ in range(self.rng.randrange(12)))
        if r == 9 and depth < 3:
            return [self.value(depth + 1) for _ in range(self.rng.choice([0, 1, 2, 5]))]
        if r == 10 and depth < 3:
            return {self.key(): self.value(depth + 1) for _ in range(self.rng.choice([0, 1, 3]))}
        return self.rng.choice([[], {}, [[[[[]]]]], {"a": {"b": {"c": {}}}}])

    def key(self) -> str:
        if self.vocabulary and self.rng.random() < 0.7:
            return self.rng.choice(self.vocabulary)
        return self.rng.choice(INTERESTING_STRS)

    def _slots(self, doc: Any) -> list[tuple[Any, Any]]:
        """Every (container, key or index) in ``doc``, found without recursion."""
        out: list[tuple[Any, Any]] = []
        stack = [doc]
        while stack:
            node = stack.pop()
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            for k, v in items:
                out.append((node, k))
                if isinstance(v, dict | list):
                    stack.append(v)
        return out

    def mutate_json(self, doc: Any) -> Any:
        doc = copy.deepcopy(doc)
        for _ in range(self.rng.choice([1, 1, 1, 2, 3])):
            slots = self._slots(doc)
            if not slots:
                return self.value()
            node, k = self.rng.choice(slots)
            old = node[k]
            op = self.rng.randrange(9)
            if op in (0, 1, 2):  # a value of any type
                node[k] = self.value()
            elif op == 3:  # remove it
                del node[k]
            elif op == 4 and isinstance(node, dict):  # add a key, often a real one elsewhere in the document
                node[self.key()] = self.value()
            elif op == 5 and isinstance(old, int | float) and not isinstance(old, bool):  # nudge a number
                node[k] = self.rng.choice([old + 1, old - 1, -old, old * 2, old * 1000, old + 0.5, str(old)])
            elif op == 6 and isinstance(old, str):  # reshape a string
                node[k] = self.rng.choice(
                    [old[:-1], old + old, old.upper(), old[: self.rng.randrange(len(old) + 1)], old + "\x00"]
                )
            elif op == 7 and isinstance(old, list):  # change a list's length
                node[k] = old + old[:1] if self.rng.random() < 0.5 else old[1:]
            elif op == 8:  # wrap it
                node[k] = self.rng.choice([[old], {"value": old}, str(old)])
        return doc

    def dump_json(self, doc: Any) -> bytes:
        try:
            text = json.dumps(doc, sort_keys=self.rng.random() < 0.5, separators=(",", ":"), ensure_ascii=self.rng.random() < 0.3)
        except ValueError:  # an integer too long to print: hand over raw digits instead
            text = "1" * 5000
        return text.encode("utf-8", "surrogatepass")  # lone surrogates become invalid UTF-8, on purpose
