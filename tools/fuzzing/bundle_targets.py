"""Fuzz targets for the watchlist bundle: the manifest parser, the chunk parser, a bundle folder on disk."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import shutil
from pathlib import Path

from edge.watchlist.bundle import check_manifest, read_bundle, verify_bundle
from edge.watchlist.chunks import MAGIC, decode_chunk
from edge.watchlist.manifest import chunk_name, parse_manifest
from tools.fuzzing.base import BundleKit, Target, _keys_of
from tools.fuzzing.mutator import Mutator


class ManifestTarget(Target):
    name = "watchlist-manifest"

    def __init__(self, rng: random.Random, work: Path, kit: BundleKit) -> None:
        super().__init__(rng, work, kit)
        self.m = Mutator(rng, _keys_of(kit.manifest_doc))

    def generate(self) -> bytes:
        r = self.rng.random()
        if r < 0.55:
            return self.m.dump_json(self.m.mutate_json(self.kit.manifest_doc))
        if r < 0.9:
            return self.m.mutate_bytes(self.kit.manifest_bytes, [self.kit.manifest_bytes])
        return self.m.random_bytes()

    def run(self, case: bytes) -> bool:
        m = parse_manifest(case)
        _ = m.sha256  # what the store records: must not fail on anything the parser accepted
        check_manifest(m, embedding_space=self.kit.space, current_version=4, expected_name="city")
        return True


class ChunkTarget(Target):
    name = "watchlist-chunk"

    def __init__(self, rng: random.Random, work: Path, kit: BundleKit) -> None:
        super().__init__(rng, work, kit)
        self.seeds = [(c, "float16") for c in kit.chunks] + [(c, "float32") for c in kit.chunks32]
        metas = [json.loads(self._split(c)[0]) for c, _ in self.seeds]
        self.m = Mutator(rng, _keys_of(*metas))

    @staticmethod
    def _split(chunk: bytes) -> tuple[bytes, bytes]:
        head = len(MAGIC) + 4
        n = int.from_bytes(chunk[len(MAGIC) : head], "big")
        return chunk[head : head + n], chunk[head + n :]

    def generate(self) -> tuple[bytes, str, int]:
        data, dtype = self.rng.choice(self.seeds)
        dimension = 32 if self.rng.random() < 0.9 else self.rng.choice([8, 16, 31, 33, 64, 4096])
        if self.rng.random() < 0.05:
            dtype = "float32" if dtype == "float16" else "float16"
        r = self.rng.random()
        if r < 0.45:  # a mutated entry table under a correct (sometimes wrong) length, with the real embeddings
            meta, body = self._split(data)
            table = self.m.dump_json(self.m.mutate_json(json.loads(meta)))
            length = len(table) if self.rng.random() < 0.9 else self.rng.choice([0, len(table) + 1, 2**32 - 1])
            data = MAGIC + length.to_bytes(4, "big") + table + body
        elif r < 0.6:  # embeddings altered: NaN, infinity, zeros, cut or padded
            meta, body = self._split(data)
            arr = bytearray(body)
            op = self.rng.randrange(4)
            if op == 0 and arr:
                pos = self.rng.randrange(len(arr) // 2) * 2
                arr[pos : pos + 2] = self.rng.choice([b"\x00\x7e", b"\x00\x7c", b"\xff\xff", b"\x00\x00"])
            elif op == 1:
                arr = bytearray(len(arr))
            elif op == 2:
                arr = arr[: self.rng.randrange(len(arr) + 1)]
            else:
                arr += self.rng.randbytes(self.rng.choice([1, 2, 64]))
            data = MAGIC + len(meta).to_bytes(4, "big") + meta + bytes(arr)
        elif r < 0.95:
            data = self.m.mutate_bytes(data, [s for s, _ in self.seeds])
        else:
            data = (MAGIC if self.rng.random() < 0.5 else b"") + self.m.random_bytes()
        return data, dtype, dimension

    def run(self, case: tuple[bytes, str, int]) -> bool:
        data, dtype, dimension = case
        decode_chunk(data, dtype, dimension, name="chunks/00000.bin")
        return True

    def describe(self, case: tuple[bytes, str, int]) -> bytes:
        data, dtype, dimension = case
        return f"{dtype} {dimension} ".encode() + data


class FolderTarget(Target):
    """A bundle folder on disk through read_bundle and verify_bundle; mutated manifests are often re-signed
    with the trusted key and mutated chunks re-hashed, so the inputs reach the checks behind the signature."""

    name = "bundle-folder"

    def __init__(self, rng: random.Random, work: Path, kit: BundleKit) -> None:
        super().__init__(rng, work, kit)
        self.m = Mutator(rng, _keys_of(kit.manifest_doc))
        self.folder = work / "bundle"

    def generate(self) -> tuple[dict[str, bytes | None], int | None]:
        kit, rng = self.kit, self.rng
        doc = copy.deepcopy(kit.manifest_doc)
        chunks: list[bytes | None] = list(kit.chunks)
        signature: bytes | None = kit.signature
        files: dict[str, bytes | None] = {}
        r = rng.random()
        if r < 0.35:  # alter a chunk, then (mostly) make the manifest agree with it
            i = rng.randrange(len(chunks))
            chunk = chunks[i] or b""
            chunks[i] = self.m.mutate_bytes(chunk, kit.chunks) if rng.random() < 0.6 else ChunkTarget._split(chunk)[0]
            if rng.random() < 0.8:
                new = chunks[i] or b""
                doc["chunks"][i].update(sha256=hashlib.sha256(new).hexdigest(), size=len(new))
        elif r < 0.65:
            doc = self.m.mutate_json(doc)
        elif r < 0.75:
            chunks[rng.randrange(len(chunks))] = None  # a missing chunk file
        elif r < 0.85:
            signature = self.m.mutate_bytes(kit.signature) if rng.random() < 0.7 else None
        if isinstance(doc, dict) and rng.random() < 0.3:  # shift time, version or name
            shifted = self.m.mutate_json({"version": doc.get("version"), "expires_at": doc.get("expires_at")})
            doc.update(shifted if isinstance(shifted, dict) else {})
        manifest = self.m.dump_json(doc) if doc != kit.manifest_doc else kit.manifest_bytes
        if signature is not None and manifest != kit.manifest_bytes:
            s = rng.random()
            if s < 0.7:
                signature = kit.key.sign(manifest)  # trusted: the checks behind the signature run
            elif s < 0.85:
                signature = kit.other_key.sign(manifest)
        if rng.random() < 0.05:
            manifest = self.m.mutate_bytes(manifest)
        files["manifest.json"] = manifest
        files["manifest.sig"] = signature
        for i, c in enumerate(chunks):
            files[chunk_name(i)] = c
        if rng.random() < 0.05:
            files[chunk_name(len(chunks))] = kit.chunks[0]  # an extra, unlisted chunk
        return files, rng.choice([None, 4, 5])  # and the version the device holds

    def run(self, case: tuple[dict[str, bytes | None], int | None]) -> bool:
        files, current = case
        shutil.rmtree(self.folder, ignore_errors=True)
        (self.folder / "chunks").mkdir(parents=True)
        for rel, data in files.items():
            if data is not None:
                (self.folder / rel).write_bytes(data)
        bundle = read_bundle(self.folder)
        verify_bundle(bundle, self.kit.keys, embedding_space=self.kit.space, current_version=current, expected_name="city")
        return True

    def describe(self, case: tuple[dict[str, bytes | None], int | None]) -> bytes:
        files, current = case
        return json.dumps({"current_version": current, **{k: None if v is None else v.hex() for k, v in files.items()}}).encode()
