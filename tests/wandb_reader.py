"""Read an offline wandb run file (`run-<id>.wandb`) without a network, for the tests.

The file is a LevelDB-style log (the format of wandb's Go core `store` package): a 7-byte header
(":W&B", magic 0xBEE1 little-endian, version 0), then 32 KiB blocks of chunks, each with a 7-byte header
(CRC-32 of type byte + payload, payload length as uint16, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4); a block
tail shorter than a chunk header is zero padding. Reassembled payloads are `wandb_internal_pb2.Record`
protobufs. wandb 0.31 ships no reader for these files, so this decodes them with wandb's own protobuf classes.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

_BLOCK = 32768
_HEADER = struct.Struct("<4sHB")
_CHUNK = struct.Struct("<IHB")
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list[pb.Record]:
    """All records of a `.wandb` file, checksums verified."""
    data = Path(path).read_bytes()
    ident, magic, version = _HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise ValueError(f"{path}: not a wandb run file (header {ident!r} {magic:#x} v{version})")
    records, pending, pos = [], b"", _HEADER.size
    while pos + _CHUNK.size <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK.size:
            pos += left_in_block
            continue
        checksum, length, kind = _CHUNK.unpack_from(data, pos)
        payload = data[pos + _CHUNK.size : pos + _CHUNK.size + length]
        pos += _CHUNK.size + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += _BLOCK - pos % _BLOCK if pos % _BLOCK else 0
            continue
        if zlib.crc32(bytes([kind]) + payload) != checksum:
            raise ValueError(f"{path}: bad checksum at byte {pos - length - _CHUNK.size}")
        if kind == _FULL:
            pending = payload
        elif kind == _FIRST:
            pending = payload
            continue
        elif kind == _MIDDLE:
            pending += payload
            continue
        elif kind == _LAST:
            pending += payload
        else:
            raise ValueError(f"{path}: unknown chunk type {kind}")
        record = pb.Record()
        record.ParseFromString(pending)
        records.append(record)
        pending = b""
    return records


def _items(items: Any) -> dict[str, Any]:
    """history / summary / config items: `key` or nested `nested_key`, JSON-encoded `value_json`."""
    out = {}
    for item in items:
        key = "/".join(item.nested_key) if item.nested_key else item.key
        out[key] = json.loads(item.value_json)
    return out


@dataclass
class OfflineRun:
    """What a run file holds: run id, group, name, job type, tags, config, history rows and the final summary."""

    run_id: str = ""
    group: str = ""
    name: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None

    def series(self, key: str) -> list[Any]:
        """The values of one logged key, in logging order (rows without it skipped)."""
        return [row[key] for row in self.history if key in row]


def read_run(path: str | Path) -> OfflineRun:
    """Decode a `run-<id>.wandb` file into an `OfflineRun`."""
    run = OfflineRun()
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.group, run.name, run.job_type = r.run_id, r.run_group, r.display_name, r.job_type
            run.tags = list(r.tags)
            run.config.update(_items(r.config.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    run.config.pop("_wandb", None)
    return run


def find_run_files(root: str | Path) -> list[Path]:
    """Every `run-*.wandb` file below `root`, sorted by path (so by start time), without wandb's `latest-run` link."""
    return sorted(p for p in Path(root).rglob("run-*.wandb") if "latest-run" not in p.parts)
