"""The delta index test vectors: chunk boundaries, good indexes and bad ones.

``extensions/delta_index_vectors.json`` is for other implementations too, so
every chunking vector is also checked against :func:`reference_chunks`, a
literal, byte-by-byte transcription of spec/delta-index.md §2 that shares no
code with ``opendistro.delta.chunker``. Run this file as a script with
``--regenerate`` to rewrite the vectors.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import random
import struct
import sys
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opendistro import bencode
from opendistro.delta.binpatch import apply_patch, make_patch
from opendistro.delta.chunker import ChunkerParams, chunk_bytes, symbol_table
from opendistro.delta.index import DeltaIndex, IndexedFile, Segment
from opendistro.delta.tarcuts import TarCuts
from opendistro.errors import DeltaError, DeltaIndexError

VECTORS = Path(__file__).resolve().parents[1] / "extensions" / "delta_index_vectors.json"


# -- the spec, transcribed literally ------------------------------------------------------


def reference_table(seed: bytes) -> list[int]:
    """spec §2.2."""
    table = [0] * 256
    for bit in range(4):

        def key(value: int, bit: int = bit) -> tuple[bytes, int]:
            return hashlib.sha256(seed + bytes([bit, value])).digest(), value

        for value in sorted(range(256), key=key)[:128]:
            table[value] |= 1 << bit
    return table


def reference_chunks(
    data: bytes, min_size: int, avg_size: int, max_size: int, seed: bytes
) -> list[tuple[int, int, str]]:
    """spec §2.3-2.5, one byte at a time: (offset, length, which rule cut it)."""
    table = reference_table(seed)

    def table_bit(index: int, bit: int) -> int:
        return (table[data[index]] >> bit) & 1 if index >= 0 else 0

    sigma = [
        table_bit(i, 0) ^ table_bit(i - 7, 1) ^ table_bit(i - 19, 2) ^ table_bit(i - 37, 3)
        for i in range(len(data))
    ]
    k = avg_size.bit_length() - 1
    hard = [1] * k + [0]
    easy = [1] * (k - 2) + [0]

    def ends_at(pattern: list[int], c: int) -> bool:
        m = len(pattern)
        return m <= c and all(sigma[c - m + j] == pattern[j] for j in range(m))

    def first(pattern: list[int], low: int, high: int) -> int | None:
        return next((c for c in range(low, high + 1) if ends_at(pattern, c)), None)

    total = len(data)
    chunks = []
    start = 0
    while total - start > 0:
        if total - start <= min_size:
            cut, rule = total, "end"
        else:
            cut, rule = first(hard, start + min_size, min(start + avg_size, total)), "hard"
            if cut is None:
                cut, rule = first(easy, start + avg_size + 1, min(start + max_size, total)), "easy"
            if cut is None:
                cut = min(start + max_size, total)
                rule = "max" if cut == start + max_size else "end"
        chunks.append((start, cut - start, rule))
        start = cut
    return chunks


def reference_tar_cuts(data: bytes) -> list[int] | None:
    """spec §2.7: the cuts of tar-format content, or None if it is not in tar format."""

    def octal(field: bytes) -> int | None:
        if b"\x00" in field:
            field = field[: field.index(b"\x00")]
        field = field.strip(b" ")
        if not field or any(byte not in b"01234567" for byte in field):
            return None
        return int(field.decode(), 8)

    def header(q: int) -> tuple[int, int] | None:
        if q + 512 > len(data):
            return None
        block = data[q : q + 512]
        if block[257:263] not in (b"ustar\x00", b"ustar "):
            return None
        checksum, size = octal(block[148:156]), octal(block[124:136])
        if checksum is None or size is None:
            return None
        if checksum != sum(block[:148]) + 8 * 32 + sum(block[156:]):
            return None
        return block[156], size

    def pad(size: int) -> int:
        return (size + 511) // 512 * 512

    if header(0) is None:
        return None
    cuts = set()
    q = 0
    while (found := header(q)) is not None:
        kind, size = found
        if chr(kind) in "LKxg":
            q = q + 512 + pad(size)
            continue
        cuts.add(q + 512)
        q = q + 512 + pad(size)
        cuts.add(q)
    return sorted(cut for cut in cuts if 0 < cut < len(data))


def reference_tar_chunks(
    data: bytes, min_size: int, avg_size: int, max_size: int, seed: bytes
) -> list[tuple[int, int, str]]:
    """spec §2.7 over §2.5: each piece chunked on its own; "cut" ends a piece early."""
    cuts = reference_tar_cuts(data)
    if cuts is None:
        return reference_chunks(data, min_size, avg_size, max_size, seed)
    chunks = []
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        for offset, length, rule in reference_chunks(
            data[start:end], min_size, avg_size, max_size, seed
        ):
            ended_early = rule == "end" and end < len(data)
            chunks.append((start + offset, length, "cut" if ended_early else rule))
    return chunks


# -- inputs described by rules ------------------------------------------------------------


def counter_stream(seed: bytes, length: int) -> bytes:
    """SHA-256(seed || 8-byte big-endian counter) for counter 0, 1, 2, ..., cut to length."""
    blocks = (length + 31) // 32
    return b"".join(hashlib.sha256(seed + n.to_bytes(8, "big")).digest() for n in range(blocks))[
        :length
    ]


def make_input(rule: dict[str, Any]) -> bytes:
    kind = rule["kind"]
    if kind == "counter":
        return counter_stream(rule["seed"].encode(), rule["length"])
    if kind == "counter-hex":
        return (
            counter_stream(rule["seed"].encode(), (rule["length"] + 1) // 2)
            .hex()
            .encode()[: rule["length"]]
        )
    if kind == "repeat":
        unit = bytes.fromhex(rule["unit_hex"])
        return (unit * (rule["length"] // len(unit) + 1))[: rule["length"]]
    if kind == "hex":
        return bytes.fromhex(rule["hex"])
    if kind == "insert":
        base = make_input(rule["base"])
        return base[: rule["at"]] + bytes.fromhex(rule["insert_hex"]) + base[rule["at"] :]
    raise AssertionError(f"unknown input rule {kind}")


def params_of(entry: dict[str, Any]) -> ChunkerParams:
    return ChunkerParams(
        min_size=entry["min_size"],
        avg_size=entry["avg_size"],
        max_size=entry["max_size"],
        seed=bytes.fromhex(entry["seed_hex"]),
    )


def params_json(params: ChunkerParams) -> dict[str, Any]:
    return {
        "algorithm": params.algorithm,
        "min_size": params.min_size,
        "avg_size": params.avg_size,
        "max_size": params.max_size,
        "seed_hex": params.seed.hex(),
    }


# -- the index model as JSON --------------------------------------------------------------


def index_to_json(index: DeltaIndex) -> dict[str, Any]:
    def value(item: int | bytes) -> int | dict[str, str]:
        return item if isinstance(item, int) else {"hex": item.hex()}

    return {
        "version": index.version,
        "params": params_json(index.params),
        "info_hash_v1": index.info_hash_v1.hex() if index.info_hash_v1 else None,
        "info_hash_v2": index.info_hash_v2.hex() if index.info_hash_v2 else None,
        "name": index.name,
        "files": [
            {
                "path": list(entry.path),
                "length": entry.length,
                "segments": [
                    {
                        "kind": segment.kind,
                        "offset": segment.offset,
                        "length": segment.length,
                        "content_length": segment.content_length,
                        "chunks": [[length, digest.hex()] for length, digest in segment.chunks],
                        "recipe": None
                        if segment.recipe is None
                        else {key: value(item) for key, item in segment.recipe.items()},
                        "compressed_sha256": segment.compressed_sha256.hex()
                        if segment.compressed_sha256
                        else None,
                        "fallback_reason": segment.fallback_reason,
                        "content_format": segment.content_format,
                    }
                    for segment in entry.segments
                ],
            }
            for entry in index.files
        ],
    }


def index_from_json(data: dict[str, Any]) -> DeltaIndex:
    def value(item: int | dict[str, str]) -> int | bytes:
        return item if isinstance(item, int) else bytes.fromhex(item["hex"])

    def optional_hex(item: str | None) -> bytes | None:
        return None if item is None else bytes.fromhex(item)

    return DeltaIndex(
        version=data["version"],
        params=params_of(data["params"]),
        info_hash_v1=optional_hex(data["info_hash_v1"]),
        info_hash_v2=optional_hex(data["info_hash_v2"]),
        name=data["name"],
        files=tuple(
            IndexedFile(
                tuple(entry["path"]),
                entry["length"],
                tuple(
                    Segment(
                        kind=segment["kind"],
                        offset=segment["offset"],
                        length=segment["length"],
                        content_length=segment["content_length"],
                        chunks=tuple((n, bytes.fromhex(h)) for n, h in segment["chunks"]),
                        recipe=None
                        if segment["recipe"] is None
                        else {key: value(item) for key, item in segment["recipe"].items()},
                        compressed_sha256=optional_hex(segment["compressed_sha256"]),
                        fallback_reason=segment["fallback_reason"],
                        content_format=segment["content_format"],
                    )
                    for segment in entry["segments"]
                ),
            )
            for entry in data["files"]
        ),
    )


# -- the tests ----------------------------------------------------------------------------


def load_vectors() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(VECTORS.read_text())
    return result


DOCUMENT = load_vectors() if VECTORS.exists() else {"tables": [], "chunking": [], "index": {}}
CHUNKING = DOCUMENT["chunking"]
GOOD = DOCUMENT["index"].get("good", [])
BAD = DOCUMENT["index"].get("bad", [])


def test_vector_file_covers_every_case() -> None:
    rules = {chunk[3] for vector in CHUNKING for chunk in vector["chunks"]}
    assert rules == {"hard", "easy", "max", "end", "cut"}
    assert any(vector.get("content_format") == "tar" for vector in CHUNKING)
    assert any(not vector["chunks"] for vector in CHUNKING)
    assert len(GOOD) >= 2 and len(BAD) >= 40
    kinds = {s["kind"] for v in GOOD for f in v["expected"]["files"] for s in f["segments"]}
    assert {"raw", "gzip", "deflate"} <= kinds
    formats = {
        s["content_format"] for v in GOOD for f in v["expected"]["files"] for s in f["segments"]
    }
    assert formats == {None, "tar"}
    names = [v["name"] for v in CHUNKING + GOOD + BAD]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("entry", DOCUMENT["tables"], ids=lambda e: e["seed_hex"])
def test_table(entry: dict[str, Any]) -> None:
    seed = bytes.fromhex(entry["seed_hex"])
    assert symbol_table(seed).hex() == entry["table_hex"]
    assert bytes(reference_table(seed)).hex() == entry["table_hex"]


@pytest.mark.parametrize("vector", CHUNKING, ids=lambda v: v["name"])
def test_chunking_vector(vector: dict[str, Any]) -> None:
    data = make_input(vector["input"])
    params = params_of(vector["params"])
    expected = [(offset, length, digest) for offset, length, digest, _ in vector["chunks"]]
    tar = vector.get("content_format") == "tar"
    finder = TarCuts()
    chunks = chunk_bytes(data, params, finder) if tar else chunk_bytes(data, params)
    assert [(c.offset, c.length, c.hash.hex()) for c in chunks] == expected
    assert finder.is_tar == tar
    reference = (reference_tar_chunks if tar else reference_chunks)(
        data, params.min_size, params.avg_size, params.max_size, params.seed
    )
    assert [[*chunk[:2], chunk[2]] for chunk in reference] == [
        [offset, length, rule] for offset, length, _, rule in vector["chunks"]
    ]
    for offset, length, digest, _ in vector["chunks"]:
        assert hashlib.sha256(data[offset : offset + length]).digest()[:16].hex() == digest


def test_insertion_vector_shares_the_chunks_after_the_edit() -> None:
    by_name = {vector["name"]: vector for vector in CHUNKING}
    edited = by_name["small parameters: 10 bytes inserted at 3000"]
    original = by_name["small parameters: 16 KiB counter stream"]
    old = {digest for _, _, digest, _ in original["chunks"]}
    new = [digest for _, _, digest, _ in edited["chunks"]]
    changed = [digest for digest in new if digest not in old]
    assert 1 <= len(changed) <= 3
    assert new[-1] in old


@pytest.mark.parametrize("vector", GOOD, ids=lambda v: v["name"])
def test_good_index(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    index = DeltaIndex.decode(data)
    assert index_to_json(index) == vector["expected"]
    assert index.encode() == data
    assert index_from_json(vector["expected"]).encode() == data


@pytest.mark.parametrize("vector", BAD, ids=lambda v: v["name"])
def test_bad_index(vector: dict[str, Any]) -> None:
    with pytest.raises(DeltaIndexError, match=vector["match"]):
        DeltaIndex.decode(bytes.fromhex(vector["hex"]))


PATCHES = DOCUMENT.get("patches", {"good": [], "bad": []})


def test_patch_vectors_cover_adds_inserts_and_refusals() -> None:
    assert len(PATCHES["good"]) >= 3 and len(PATCHES["bad"]) >= 8
    names = [v["name"] for v in PATCHES["good"] + PATCHES["bad"]]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("vector", PATCHES["good"], ids=lambda v: v["name"])
def test_good_patch(vector: dict[str, Any]) -> None:
    base, patch = bytes.fromhex(vector["base_hex"]), bytes.fromhex(vector["patch_hex"])
    assert b"".join(apply_patch(patch, base)).hex() == vector["result_hex"]


@pytest.mark.parametrize("vector", PATCHES["bad"], ids=lambda v: v["name"])
def test_bad_patch(vector: dict[str, Any]) -> None:
    base, patch = bytes.fromhex(vector["base_hex"]), bytes.fromhex(vector["patch_hex"])
    with pytest.raises(DeltaError, match=vector["match"]):
        b"".join(apply_patch(patch, base))


# -- regenerating -------------------------------------------------------------------------

SMALL = ChunkerParams(min_size=64, avg_size=256, max_size=1024, seed=b"test")


def _chunking_vectors() -> list[dict[str, Any]]:  # pragma: no cover - run by hand
    default = ChunkerParams()
    counter = {"kind": "counter", "seed": "od-cdc-1 vector", "length": 16384}
    cases: list[tuple[str, ChunkerParams, dict[str, Any]]] = [
        (
            "default parameters: 256 KiB counter stream",
            default,
            {"kind": "counter", "seed": "od-cdc-1 vector", "length": 262144},
        ),
        (
            "default parameters: 160 KiB of hex text",
            default,
            {"kind": "counter-hex", "seed": "od-cdc-1 text", "length": 163840},
        ),
        (
            "default parameters: 200000 zero bytes",
            default,
            {"kind": "repeat", "unit_hex": "00", "length": 200000},
        ),
        (
            "default parameters: 1000 bytes, shorter than min-size",
            default,
            {"kind": "counter", "seed": "short", "length": 1000},
        ),
        (
            "default parameters: exactly min-size plus one byte",
            default,
            {"kind": "counter", "seed": "short", "length": 2049},
        ),
        ("default parameters: empty input", default, {"kind": "hex", "hex": ""}),
        ("small parameters: 16 KiB counter stream", SMALL, counter),
        (
            "small parameters: 10 bytes inserted at 3000",
            SMALL,
            {"kind": "insert", "base": counter, "at": 3000, "insert_hex": "00112233445566778899"},
        ),
        (
            "small parameters: 12 KiB of hex text",
            SMALL,
            {"kind": "counter-hex", "seed": "od-cdc-1 text", "length": 12288},
        ),
        (
            "small parameters: 'ab' repeated",
            SMALL,
            {"kind": "repeat", "unit_hex": "6162", "length": 5000},
        ),
    ]
    tar_hex = {"kind": "hex", "hex": small_tar().hex()}
    cases += [
        ("small parameters, tar format: a small tar archive", SMALL, tar_hex),
        ("default parameters, tar format: a small tar archive", default, tar_hex),
    ]
    vectors = []
    for name, params, rule in cases:
        data = make_input(rule)
        tar = "tar format" in name
        reference = (reference_tar_chunks if tar else reference_chunks)(
            data, params.min_size, params.avg_size, params.max_size, params.seed
        )
        vectors.append(
            {
                "name": name,
                "params": params_json(params),
                **({"content_format": "tar"} if tar else {}),
                "input": rule,
                "chunks": [
                    [
                        offset,
                        length,
                        hashlib.sha256(data[offset : offset + length]).digest()[:16].hex(),
                        rule_name,
                    ]
                    for offset, length, rule_name in reference
                ],
            }
        )
    return vectors


def small_tar() -> bytes:
    """A GNU tar of a long-named file, an empty file, a folder and a 3000-byte file."""

    def member(name: str, data: bytes | None, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.size, info.mtime, info.mode = kind, len(data or b""), 1700000000, 0o644
        info.uname = info.gname = "od"
        return info

    text = make_input({"kind": "counter-hex", "seed": "tar member", "length": 3000})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        archive.addfile(member("pkg-1.0/", None, tarfile.DIRTYPE))
        long_name = "pkg-1.0/" + "long-name-" * 12 + ".txt"
        archive.addfile(member(long_name, b"hello\n"), io.BytesIO(b"hello\n"))
        archive.addfile(member("pkg-1.0/empty", b""))
        archive.addfile(member("pkg-1.0/text.txt", text), io.BytesIO(text))
    return buffer.getvalue()


def _segment(
    kind: str, offset: int, content: bytes, params: ChunkerParams, **extra: Any
) -> Segment:
    finder = TarCuts()
    chunks = tuple((c.length, c.hash) for c in chunk_bytes(content, params, finder))
    length = extra.pop("length", len(content))
    extra.setdefault("content_format", "tar" if finder.is_tar else None)
    return Segment(kind, offset, length, len(content), chunks, **extra)


def _good_indexes() -> list[tuple[str, DeltaIndex]]:  # pragma: no cover - run by hand
    hello = b"hello, world\n"
    single = DeltaIndex(
        version=1,
        params=ChunkerParams(),
        info_hash_v1=hashlib.sha1(b"hello torrent").digest(),
        info_hash_v2=None,
        name="hello.txt",
        files=(
            IndexedFile(("hello.txt",), len(hello), (_segment("raw", 0, hello, ChunkerParams()),)),
        ),
    )
    readme = make_input({"kind": "counter-hex", "seed": "readme", "length": 700})
    tar = make_input({"kind": "counter-hex", "seed": "tar", "length": 3000})
    tar_gz = gzip.compress(tar, compresslevel=9, mtime=0)
    member = make_input({"kind": "counter-hex", "seed": "member", "length": 1500})
    packer = zlib.compressobj(6, zlib.DEFLATED, -15, 8, 0)
    deflated = packer.compress(member) + packer.flush()
    local_header = b"PK\x03\x04" + bytes(26)
    tail = make_input({"kind": "counter", "seed": "central directory", "length": 90})
    unreproduced = make_input({"kind": "counter", "seed": "someone else's deflate", "length": 120})
    zip_bytes = local_header + deflated + unreproduced + tail
    zip_segments = (
        _segment("raw", 0, local_header, SMALL),
        _segment(
            "deflate",
            30,
            member,
            SMALL,
            length=len(deflated),
            recipe={"level": 6, "mem_level": 8, "strategy": 0, "wbits": 15},
            compressed_sha256=hashlib.sha256(deflated).digest(),
        ),
        _segment(
            "raw",
            30 + len(deflated),
            unreproduced,
            SMALL,
            fallback_reason="no recipe reproduces this deflate stream",
        ),
        _segment("raw", 30 + len(deflated) + len(unreproduced), tail, SMALL),
    )
    multi = DeltaIndex(
        version=1,
        params=SMALL,
        info_hash_v1=hashlib.sha1(b"example torrent").digest(),
        info_hash_v2=hashlib.sha256(b"example torrent").digest(),
        name="example-1.1",
        files=(
            IndexedFile(("README",), len(readme), (_segment("raw", 0, readme, SMALL),)),
            IndexedFile(("empty",), 0, ()),
            IndexedFile(
                ("dist", "example-1.1.tar.gz"),
                len(tar_gz),
                (
                    _segment(
                        "gzip",
                        0,
                        tar,
                        SMALL,
                        length=len(tar_gz),
                        recipe={
                            "header": tar_gz[:10],
                            "level": 9,
                            "mem_level": 8,
                            "strategy": 0,
                            "wbits": 15,
                        },
                        compressed_sha256=hashlib.sha256(tar_gz).digest(),
                    ),
                ),
            ),
            IndexedFile(("dist", "example-1.1.zip"), len(zip_bytes), zip_segments),
        ),
    )
    archive = small_tar()
    tarred = DeltaIndex(
        version=1,
        params=ChunkerParams(),
        info_hash_v1=None,
        info_hash_v2=hashlib.sha256(b"tar torrent").digest(),
        name="pkg-1.0.tar",
        files=(
            IndexedFile(
                ("pkg-1.0.tar",), len(archive), (_segment("raw", 0, archive, ChunkerParams()),)
            ),
        ),
    )
    return [
        ("one raw file, v1 info-hash only", single),
        ("hybrid torrent: raw, empty, gzip, zip with deflate and a fallback", multi),
        ("a tar file: content-format tar, short chunks", tarred),
    ]


def _bad_indexes(  # pragma: no cover
    good: bytes, multi: bytes, tarred: bytes
) -> list[tuple[str, bytes, str]]:
    """Malformed indexes: each one mutation of a good index, and the error text it causes."""
    bad: list[tuple[str, bytes, str]] = []

    def variant(name: str, match: str, change: Callable[[dict[bytes, Any]], Any]) -> None:
        document = bencode.decode(multi)
        change(document)
        bad.append((name, bencode.encode(document), match))

    def files(document: dict[bytes, Any]) -> list[dict[bytes, Any]]:
        result: list[dict[bytes, Any]] = document[b"files"]
        return result

    def segment(document: dict[bytes, Any], file: int, number: int) -> dict[bytes, Any]:
        result: dict[bytes, Any] = files(document)[file][b"segments"][number]
        return result

    def entries(packed: bytes) -> list[tuple[int, bytes]]:
        return [
            (int.from_bytes(packed[i : i + 4], "big"), packed[i + 4 : i + 20])
            for i in range(0, len(packed), 20)
        ]

    def pack(items: list[tuple[int, bytes]]) -> bytes:
        return b"".join(length.to_bytes(4, "big") + digest for length, digest in items)

    bad.append(("not bencoding", b"not an index", "not a canonical bencoded index"))
    bad.append(("trailing bytes after the index", good + b"0:", "trailing bytes"))
    bad.append(
        (
            "integer with a leading zero",
            good.replace(b"i8192e", b"i08192e", 1),
            "non-canonical integer",
        )
    )
    bad.append(("a list, not a dictionary", bencode.encode([1]), "must be a dictionary"))
    variant(
        "format version 2",
        "unsupported delta index version 2",
        lambda d: d.__setitem__(b"version", 2),
    )
    variant(
        "format version missing",
        "unsupported delta index version None",
        lambda d: d.pop(b"version"),
    )
    variant(
        "unknown top-level key",
        "unknown key b'comment'",
        lambda d: d.__setitem__(b"comment", b"hi"),
    )
    variant("files missing", "missing key b'files'", lambda d: d.pop(b"files"))
    decoded = bencode.decode(good)
    bad.append(
        (
            "top-level keys out of order",
            b"d"
            + b"".join(
                bencode.encode(key) + bencode.encode(decoded[key])
                for key in sorted(decoded, reverse=True)
            )
            + b"e",
            "canonical \\(sorted\\) order",
        )
    )
    variant(
        "unknown chunking algorithm",
        "unknown chunking algorithm",
        lambda d: d[b"chunker"].__setitem__(b"algorithm", b"fastcdc"),
    )
    variant(
        "avg-size not a power of two",
        "power of two",
        lambda d: d[b"chunker"].__setitem__(b"avg-size", 300),
    )
    variant(
        "min-size above avg-size",
        "chunker sizes must satisfy",
        lambda d: d[b"chunker"].__setitem__(b"min-size", 512),
    )
    variant(
        "min-size below 64",
        "chunker sizes must satisfy",
        lambda d: d[b"chunker"].__setitem__(b"min-size", 32),
    )
    variant(
        "max-size above 16 MiB",
        "chunker sizes must satisfy",
        lambda d: d[b"chunker"].__setitem__(b"max-size", 16 * 1024 * 1024 + 1),
    )
    variant(
        "empty seed",
        "seed must be 1 to 64 bytes",
        lambda d: d[b"chunker"].__setitem__(b"seed", b""),
    )
    variant("chunker key missing", "missing key b'seed'", lambda d: d[b"chunker"].pop(b"seed"))
    variant(
        "no info-hash",
        "at least one info-hash",
        lambda d: (d.pop(b"info-hash-v1"), d.pop(b"info-hash-v2")),
    )
    variant(
        "info-hash-v1 of 19 bytes",
        "info-hash v1 must be 20 bytes",
        lambda d: d.__setitem__(b"info-hash-v1", bytes(19)),
    )
    variant(
        "info-hash-v2 of 20 bytes",
        "info-hash v2 must be 32 bytes",
        lambda d: d.__setitem__(b"info-hash-v2", bytes(20)),
    )
    variant("release name '..'", "unsafe release name", lambda d: d.__setitem__(b"name", b".."))
    variant(
        "release name with an escape character",
        "control character",
        lambda d: d.__setitem__(b"name", b"example\x1b[2J"),
    )
    variant(
        "release name not UTF-8", "not valid UTF-8", lambda d: d.__setitem__(b"name", b"\xff\xfe")
    )
    variant("no files", "at least one file", lambda d: d.__setitem__(b"files", []))
    variant(
        "path climbing out with '..'",
        "unsafe file path",
        lambda d: files(d)[2].__setitem__(b"path", [b"..", b"etc", b"passwd"]),
    )
    variant(
        "path component with a slash",
        "unsafe file path",
        lambda d: files(d)[0].__setitem__(b"path", [b"a/b"]),
    )
    variant(
        "path component naming a Windows device",
        "unsafe file path",
        lambda d: files(d)[0].__setitem__(b"path", [b"nul.txt"]),
    )
    variant(
        "path component not UTF-8",
        "not valid UTF-8",
        lambda d: files(d)[0].__setitem__(b"path", [b"\xc3\x28"]),
    )
    variant(
        "empty path",
        "path must be a non-empty list",
        lambda d: files(d)[0].__setitem__(b"path", []),
    )
    variant(
        "two files with one path",
        "listed twice",
        lambda d: files(d)[1].__setitem__(b"path", [b"README"]),
    )
    variant(
        "a file inside a path listed as a file",
        "inside a path that is listed as a file",
        lambda d: files(d)[0].__setitem__(b"path", [b"dist"]),
    )
    variant(
        "a file where another file's folder is",
        "listed twice or is also a folder",
        lambda d: files(d)[3].__setitem__(b"path", [b"dist"]),
    )
    variant(
        "file length negative",
        "length must be a non-negative integer",
        lambda d: files(d)[1].__setitem__(b"length", -1),
    )
    variant(
        "first segment not at offset 0",
        "starts at 1, not at 0",
        lambda d: segment(d, 3, 0).__setitem__(b"offset", 1),
    )
    variant(
        "segments overlap",
        "segment 1 starts at 29, not at 30",
        lambda d: segment(d, 3, 1).__setitem__(b"offset", 29),
    )
    variant(
        "segments end before the file does",
        "segments cover",
        lambda d: files(d)[3][b"segments"].pop(),
    )
    variant(
        "segments run past the file's end",
        "segments cover",
        lambda d: files(d)[0].__setitem__(b"length", files(d)[0][b"length"] - 1),
    )
    variant(
        "a non-empty file without segments",
        "segments cover 0 bytes",
        lambda d: files(d)[0].__setitem__(b"segments", []),
    )
    variant(
        "negative segment offset",
        "offset must be a non-negative integer",
        lambda d: segment(d, 0, 0).__setitem__(b"offset", -1),
    )
    variant(
        "unknown segment kind",
        "unknown segment kind 'lzma'",
        lambda d: segment(d, 2, 0).__setitem__(b"kind", b"lzma"),
    )
    variant(
        "unknown segment key",
        "unknown key b'note'",
        lambda d: segment(d, 0, 0).__setitem__(b"note", b"x"),
    )
    variant(
        "segment content-length missing",
        "missing key b'content-length'",
        lambda d: segment(d, 0, 0).pop(b"content-length"),
    )
    variant(
        "chunks not a whole number of entries",
        "whole number of 20-byte entries",
        lambda d: segment(d, 0, 0).__setitem__(b"chunks", segment(d, 0, 0)[b"chunks"][:-1]),
    )
    variant(
        "chunk lengths do not add up",
        "add up to",
        lambda d: segment(d, 2, 0).__setitem__(b"content-length", 3001),
    )
    variant(
        "chunk of length zero",
        "chunk length 0 is out of range",
        lambda d: segment(d, 0, 0).__setitem__(
            b"chunks", pack([*entries(segment(d, 0, 0)[b"chunks"]), (0, bytes(16))])
        ),
    )
    variant(
        "chunk longer than max-size",
        "a chunk is longer than 1024",
        lambda d: segment(d, 2, 0).__setitem__(
            b"chunks", pack([(1100, bytes(16)), (1900, bytes(16))])
        ),
    )
    variant(
        "short chunk before the last one",
        "shorter than 64",
        lambda d: segment(d, 2, 0).__setitem__(
            b"chunks",
            pack([(63, bytes(16)), (1000, bytes(16)), (1000, bytes(16)), (937, bytes(16))]),
        ),
    )
    variant(
        "raw segment whose content-length is not its length",
        "content length must equal",
        lambda d: (
            segment(d, 0, 0).__setitem__(b"content-length", 701),
            segment(d, 0, 0).__setitem__(
                b"chunks", pack([*entries(segment(d, 0, 0)[b"chunks"]), (1, bytes(16))])
            ),
        ),
    )
    variant(
        "raw segment with a recipe",
        "no recipe",
        lambda d: segment(d, 0, 0).__setitem__(b"recipe", {b"level": 9}),
    )
    variant(
        "raw segment with a sha256",
        "no compressed SHA-256",
        lambda d: segment(d, 0, 0).__setitem__(b"sha256", bytes(32)),
    )
    variant(
        "gzip segment without a recipe", "needs a recipe", lambda d: segment(d, 2, 0).pop(b"recipe")
    )
    variant(
        "gzip segment without a sha256",
        "needs the 32-byte SHA-256",
        lambda d: segment(d, 2, 0).pop(b"sha256"),
    )
    variant(
        "gzip segment with a 31-byte sha256",
        "needs the 32-byte SHA-256",
        lambda d: segment(d, 2, 0).__setitem__(b"sha256", bytes(31)),
    )
    variant(
        "fallback reason on a deflate segment",
        "only a raw segment can carry a fallback",
        lambda d: segment(d, 3, 1).__setitem__(b"fallback", b"why"),
    )
    variant(
        "empty fallback reason",
        "fallback reason must be 1 to 255 bytes",
        lambda d: segment(d, 3, 2).__setitem__(b"fallback", b""),
    )
    variant(
        "recipe with 33 keys",
        "recipe has more than 32 keys",
        lambda d: segment(d, 2, 0).__setitem__(
            b"recipe", {f"k{n:02}".encode(): n for n in range(33)}
        ),
    )
    variant(
        "recipe value that is a list",
        "must be an integer or a byte string",
        lambda d: segment(d, 2, 0)[b"recipe"].__setitem__(b"level", [9]),
    )
    variant(
        "recipe key with a space",
        "recipe key 'mem level' is not allowed",
        lambda d: segment(d, 2, 0)[b"recipe"].__setitem__(b"mem level", 8),
    )
    variant(
        "recipe integer beyond 64 bits",
        "is not a 64-bit integer",
        lambda d: segment(d, 2, 0)[b"recipe"].__setitem__(b"level", 2**63),
    )
    tar_document = bencode.decode(tarred)
    tar_segment = tar_document[b"files"][0][b"segments"][0]
    tar_segment[b"content-format"] = b"zip"
    bad.append(("unknown content format", bencode.encode(tar_document), "unknown content format"))
    tar_segment.pop(b"content-format")
    bad.append(
        (
            "short chunks without content-format tar",
            bencode.encode(tar_document),
            "shorter than 2048",
        )
    )
    return bad


def _leb128(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE)


def build_patch(
    base_length: int, result_length: int, operations: bytes, difference: bytes, literal: bytes,
    *, stated: tuple[int, int, int] | None = None,
) -> bytes:
    """A patch of spec/delta-index.md §5.3 put together from its three streams, by hand.

    ``stated``: the decompressed stream lengths the header gives, if not the true ones.
    """
    streams = [operations, difference, literal]
    packed = [_xz(stream) for stream in streams]
    lengths = list(stated) if stated is not None else [len(stream) for stream in streams]
    numbers = [base_length, result_length, *lengths, *map(len, packed)]
    return b"ODBP\x01" + b"".join(map(_leb128, numbers)) + b"".join(packed)


def _add(length: int, move: int) -> bytes:
    return _leb128(length << 1) + _leb128(move * 2 if move >= 0 else -move * 2 - 1)


def _insert(length: int) -> bytes:
    return _leb128(length << 1 | 1)


def _patch_vectors() -> dict[str, list[dict[str, str]]]:  # pragma: no cover - run by hand
    base = b"The quick brown fox jumps over the lazy dog."
    # "The quick " + "red" + " fox jumps over the lazy doh." + "!!" + "quick"
    operations = _add(10, 0) + _insert(3) + _add(29, 5) + _insert(2) + _add(5, -40)
    difference = bytes(10) + bytes(27) + b"\x01" + bytes(1) + bytes(5)  # "dog" -> "doh"
    result = b"The quick red fox jumps over the lazy doh.!!quick"
    by_hand = build_patch(len(base), len(result), operations, difference, b"red!!")
    assert b"".join(apply_patch(by_hand, base)) == result
    rng = random.Random(11)
    code = [(rng.choice(b"\x48\xe8\xe9"), rng.randrange(1 << 20) * 5) for _ in range(400)]
    old = b"".join(struct.pack("<BI", opcode, target) for opcode, target in code)
    new = b"".join(struct.pack("<BI", opcode, target + 40) for opcode, target in code)
    new = new[:900] + b"inserted bytes" + new[900:]
    made = make_patch(old, new)
    good = [
        ("adds, inserts and a move back", base, by_hand, result),
        ("a rebuilt program, made by opendistro", old, made, new),
        ("an empty result", base, build_patch(len(base), 0, b"", b"", b""), b""),
    ]
    bad = [
        ("unknown magic", base, by_hand[:4] + b"\x02" + by_hand[5:], "unknown version"),
        ("truncated", base, by_hand[:-1], "fill it exactly"),
        ("a byte after the streams", base, by_hand + b"\x00", "fill it exactly"),
        ("base of another length", base + b"!", by_hand, "another length"),
        ("stream lengths that do not add up", base,
         build_patch(len(base), len(result) + 1, operations, difference, b"red!!"),
         "do not add up"),
        ("an add reading past the old content", base,
         build_patch(len(base), 50, _add(50, 0), bytes(50), b""), "outside the old content"),
        ("an add before the old content", base,
         build_patch(len(base), 5, _add(5, -1), bytes(5), b""), "outside the old content"),
        ("an empty operation", base,
         build_patch(len(base), 5, _insert(0) + _insert(5), b"", b"abcde"), "empty"),
        ("operations producing too little", base,
         build_patch(len(base), 6, _insert(5), b"", b"abcdef"), "stated length"),
        ("a difference stream holding more than its stated length", base,
         build_patch(len(base), 5, _add(5, 0), bytes(6), b"", stated=(2, 5, 0)),
         "longer than its operations"),
        ("a literal stream shorter than its operations", base,
         build_patch(len(base), 5, _insert(6), b"", b"abcde"), "overruns|shorter"),
        ("a stream that is not xz", base,
         by_hand.replace(_xz(b"red!!"), b"\x00" * len(_xz(b"red!!"))), "decompress"),
    ]
    return {
        "good": [
            {"name": name, "base_hex": b.hex(), "patch_hex": p.hex(), "result_hex": r.hex()}
            for name, b, p, r in good
        ],
        "bad": [
            {"name": name, "base_hex": b.hex(), "patch_hex": p.hex(), "error": "DeltaError",
             "match": match}
            for name, b, p, match in bad
        ],
    }


def _generate() -> dict[str, Any]:  # pragma: no cover - run by hand
    good = _good_indexes()
    encoded = [index.encode() for _, index in good]
    return {
        "description": (
            "Test vectors for spec/delta-index.md. `tables`: the table T of spec §2.2 for a"
            " seed, 256 bytes in hex. `chunking`: an input described by a rule (counter: the"
            " SHA-256 of seed || 8-byte big-endian counter 0, 1, 2, ... concatenated and cut"
            " to length; counter-hex: the lowercase hex text of a counter stream, cut to length;"
            " repeat: unit_hex repeated and cut to length; hex: literal bytes; insert: the base"
            " input with insert_hex inserted at byte at), the chunker parameters, and the"
            " expected chunks as [offset, length, chunk hash hex, rule], where rule says which"
            " step of spec §2.5 cut the chunk: hard (step 3), easy (step 4), max (step 5 at"
            " start + max-size), end (the input ran out) or cut (a piece of tar-format"
            " content ended, spec §2.7; such vectors have content_format tar). `index.good`:"
            " an encoded index (hex) and its decoded content; `index.bad`: a malformed index"
            " (hex) that a receiver must refuse; `match` is a regular expression that opendistro's"
            " DeltaIndexError message matches, naming the rule broken. `patches.good`: a binary"
            " patch of spec §5.3 (hex), the old content it applies to and the result;"
            " `patches.bad`: a patch a receiver must refuse for that old content (`match` as"
            " for indexes, on opendistro's DeltaError)."
        ),
        "tables": [
            {"seed_hex": seed.hex(), "table_hex": bytes(reference_table(seed)).hex()}
            for seed in (ChunkerParams().seed, SMALL.seed)
        ],
        "chunking": _chunking_vectors(),
        "index": {
            "good": [
                {"name": name, "hex": data.hex(), "expected": index_to_json(index)}
                for (name, index), data in zip(good, encoded, strict=True)
            ],
            "bad": [
                {"name": name, "hex": data.hex(), "error": "DeltaIndexError", "match": match}
                for name, data, match in _bad_indexes(*encoded)
            ],
        },
        "patches": _patch_vectors(),
    }


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit(f"usage: python {sys.argv[0]} --regenerate")
    VECTORS.write_text(json.dumps(_generate(), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {VECTORS}")
