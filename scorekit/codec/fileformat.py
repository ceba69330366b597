"""The codec's file format. Format 2: MAGIC, three 128-bit hashes (the weights, the payload, the images) as raw
bytes, the length of the rest of the header (4 bytes, little-endian), that header as JSON compressed with raw LZMA2,
then the ANS payload (32-bit little-endian words). Format 1 (a plain JSON header after a text magic) is still read."""

from __future__ import annotations

import hashlib
import json
import lzma

from ..errors import ScorekitError

MAGIC_V1 = b"SCOREKIT-BITSBACK-1\n"  # format 1: plain JSON header (read, no longer written)
MAGIC = b"SKBB\x02"  # format 2: three 128-bit hashes, then LZMA-compressed JSON (names optional)
HASH_HEX = 32  # 128 bits of each SHA-256: integrity checks, not signatures
LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
BINS_PER_STD = 4  # latent grid of level t: sqrt(step variance_t) / 4 (recorded as format 1 recorded it)


class CodecError(ScorekitError):
    """A file that is not a scorekit codec file, is damaged, or was made with another model."""


def weights_sha256(denoiser) -> str:
    """SHA-256 over the network's tensors (sorted names, raw bytes): the model a file was made with."""
    h = hashlib.sha256()
    for name, value in sorted(denoiser.net.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:HASH_HEX]


HASHES = ("weights", "payload", "images")  # stored as raw bytes after MAGIC, in this order


def pack_header(header: dict) -> bytes:
    """MAGIC, the three hashes as 16 raw bytes each, the compressed header's length (4 bytes) and the rest of the
    header: JSON compressed with raw LZMA2 (no container), so that 300 file names cost a few hundred bytes, not
    six thousand, and a file without names carries about 150 bytes of header."""
    rest = {k: v for k, v in header.items() if k not in (*HASHES, "format", "bins_per_std")}
    blob = lzma.compress(json.dumps(rest, separators=(",", ":")).encode(), format=lzma.FORMAT_RAW,
                         filters=LZMA_FILTERS)
    return MAGIC + b"".join(bytes.fromhex(header[k]) for k in HASHES) + len(blob).to_bytes(4, "little") + blob


def read_header(data: bytes) -> tuple[dict, bytes]:
    """The header (as format 2's keys, whichever format the file has) and the payload; refuses a damaged file."""
    if data.startswith(MAGIC_V1):  # format 1: 8-byte length, plain JSON with full hashes
        start, width = len(MAGIC_V1), 8
    elif data.startswith(MAGIC):  # format 2: the hashes, a 4-byte length, LZMA-compressed JSON
        start, width = len(MAGIC) + 16 * len(HASHES), 4
    else:
        raise CodecError("not a scorekit compressed file (bad magic bytes)")
    if len(data) < start + width:
        raise CodecError("truncated file (no header)")
    n = int.from_bytes(data[start:start + width], "little")
    blob, payload = data[start + width:start + width + n], data[start + width + n:]
    try:
        if width == 4:
            blob = lzma.decompress(blob, format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)
        header = json.loads(blob)
    except (lzma.LZMAError, json.JSONDecodeError, UnicodeDecodeError):
        raise CodecError("corrupted or truncated header") from None
    if not isinstance(header, dict):
        raise CodecError("corrupted header")
    if width == 8:
        header.update(weights=header.get("weights_sha256", ""), payload=header.get("payload_sha256", ""),
                      images=header.get("images_sha256", ""))
    else:
        raw = data[len(MAGIC):start]
        header.update({k: raw[16 * i:16 * i + 16].hex() for i, k in enumerate(HASHES)}, format=2,
                      bins_per_std=BINS_PER_STD)
    digest = hashlib.sha256(payload).hexdigest()
    if not header.get("payload") or not digest.startswith(str(header["payload"])):
        raise CodecError("corrupted or truncated file: the payload's SHA-256 does not match its header")
    check_header(header)
    return header, payload


def _ints(value, n: int | None = None, lo: int = 1) -> bool:
    return (isinstance(value, list) and (n is None or len(value) == n)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= lo for v in value))


def check_header(header: dict) -> None:
    """The keys decoding reads, with their types and ranges; a damaged or hand-edited header (the payload's hash
    does not cover it) is refused in one line naming the key, never an internal error later."""
    count = header.get("count")
    checks = [
        ("count", isinstance(count, int) and not isinstance(count, bool) and count >= 1, "a positive integer"),
        ("shape", _ints(header.get("shape"), 3), "three positive integers (C, H, W)"),
        ("chunks", _ints(header.get("chunks")) and sum(header.get("chunks")) == count,
         "positive integers that add up to count"),
        ("initial_words", _ints([header.get("initial_words")], 1, lo=0), "an integer >= 0"),
        ("names", "names" not in header or (isinstance(header["names"], list) and len(header["names"]) == count
                                            and all(isinstance(n, str) and n for n in header["names"])),
         "one non-empty string per image"),
    ]
    for key, ok, expected in checks:
        if not ok:
            shown = repr(header.get(key))
            raise CodecError(f"corrupted header: {key} is {shown[:60]}{'...' if len(shown) > 60 else ''}, expected "
                             f"{expected}")
