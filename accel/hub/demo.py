"""Deterministic pseudo-random content and the demo models built from it.

Owns ``pseudo_random_bytes`` (blake3 in XOF mode keyed by a seed and a name: the same
arguments always give the same bytes, at several GB/s, any slice addressable without
generating what comes before) and ``build_demo_store``: an ASR-like model with a few
large files and an MT-like model with many small ones, each in two versions that share
some files. Used by the demo, the benchmarks and the tests.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import blake3

from accel.hub.publish import DEFAULT_BLOCK_SIZE, publish
from accel.schema import VersionManifest

__all__ = ["build_demo_store", "pseudo_random_bytes", "write_pseudo_random"]

_PIECE = 8 * 1024 * 1024


def _key(seed: int, name: str) -> bytes:
    return blake3.blake3(f"accel-demo:{seed}:{name}".encode()).digest()


def pseudo_random_bytes(name: str, size: int, seed: int = 0, offset: int = 0) -> bytes:
    """``size`` bytes of the stream named ``name`` (with ``seed``), starting at ``offset``."""
    return blake3.blake3(key=_key(seed, name)).digest(length=size, seek=offset)


def write_pseudo_random(path: Path, size: int, *, name: str | None = None, seed: int = 0) -> None:
    """Write ``size`` pseudo-random bytes (stream ``name``, default the file name) to ``path``."""
    stream = name if name is not None else path.name
    hasher = blake3.blake3(key=_key(seed, stream))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        done = 0
        while done < size:
            n = min(_PIECE, size - done)
            f.write(hasher.digest(length=n, seek=done))
            done += n


def _materialize(
    spec: Mapping[str, int | bytes], dest: Path, seed: int, shared: Mapping[str, str] | None = None
) -> None:
    """Write ``spec`` under ``dest``; ``shared`` maps a path to the stream name it reuses."""
    for rel, what in spec.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, bytes):
            target.write_bytes(what)
        else:
            write_pseudo_random(target, what, name=(shared or {}).get(rel, rel), seed=seed)


def build_demo_store(
    root: Path, *, scale: float = 1.0, seed: int = 0, block_size: int = DEFAULT_BLOCK_SIZE
) -> list[VersionManifest]:
    """Publish the demo models into ``root``; ``scale`` multiplies every large file's size.

    At scale 1.0 the ASR model is about 200 MiB per version, the MT model about 10 MiB in
    120 small files. Version 1.1.0 of each keeps some files of 1.0.0 byte for byte, so a
    node can reuse them.
    """
    mib = 1024 * 1024

    def big(n: float) -> int:
        return max(1, int(n * mib * scale))

    out: list[VersionManifest] = []
    with tempfile.TemporaryDirectory(prefix="accel-demo-") as tmp:
        asr_common: dict[str, int | bytes] = {"encoder.onnx": big(120), "tokenizer.json": 456_789}
        asr_v1: dict[str, int | bytes] = {
            **asr_common,
            "decoder.onnx": big(60),
            "config.json": b'{"arch":"whisper"}\n',
        }
        asr_v2: dict[str, int | bytes] = {
            **asr_common,
            "decoder.onnx": big(64),
            "config.json": b'{"arch":"whisper2"}\n',
        }
        mt_v1: dict[str, int | bytes] = {f"shards/part-{i:03d}.bin": big(0.08) for i in range(120)}
        mt_v1["vocab/src.spm"] = 300_000
        mt_v2 = dict(mt_v1)
        for i in range(0, 120, 10):
            mt_v2[f"shards/part-{i:03d}.bin"] = big(0.08) + 1
        plans: list[tuple[str, str, Mapping[str, int | bytes], dict[str, object], str]] = [
            ("whisper-small-zh", "1.0.0", asr_v1, {"task": "asr", "languages": ("zh", "en")}, "a"),
            ("whisper-small-zh", "1.1.0", asr_v2, {"task": "asr", "languages": ("zh", "en")}, "b"),
            ("marian-zh-en", "1.0.0", mt_v1, {"task": "mt", "languages": ("zh", "en")}, "a"),
            ("marian-zh-en", "1.1.0", mt_v2, {"task": "mt", "languages": ("zh", "en")}, "b"),
        ]
        names = {
            "whisper-small-zh": "Whisper Small (Chinese demo)",
            "marian-zh-en": "Marian zh->en (demo)",
        }
        for model_id, version, spec, meta, tag in plans:
            src = Path(tmp) / f"{model_id}-{version}"
            # Files equal between versions use the same stream name; changed ones get the tag.
            shared = {
                rel: rel
                if (rel in asr_common or _same_in_both(model_id, rel, mt_v1, mt_v2))
                else f"{tag}:{rel}"
                for rel in spec
            }
            _materialize(spec, src, seed, shared)
            langs = meta["languages"]
            assert isinstance(langs, tuple)
            out.append(
                publish(
                    src,
                    root,
                    model_id,
                    version,
                    name=names[model_id],
                    task=str(meta["task"]),
                    languages=langs,
                    default=True,
                    block_size=block_size,
                )
            )
    return out


def _same_in_both(
    model_id: str, rel: str, v1: Mapping[str, int | bytes], v2: Mapping[str, int | bytes]
) -> bool:
    return model_id == "marian-zh-en" and v1.get(rel) == v2.get(rel)
