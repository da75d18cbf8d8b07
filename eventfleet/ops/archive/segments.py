"""The archive on disk: gzip'd JSON-lines segments and the manifests that list them.

Layout of an archive directory::

    archive.json                          namespace and shard counts (format 1)
    <shard>/<stream>/manifest.json        this stream's segments, in order, and its gaps
    <shard>/<stream>/<first>_<last>.jsonl.gz

``<stream>`` is ``events``, ``outcomes`` or ``dlq``. A segment holds one line per stream entry,
``{"id": "<entry id>", "f": {field: text}}``; a field value that is not UTF-8 goes under
``"b"`` in base64 instead. The manifest records each segment's first and last entry id, entry
count, size and the sha256 of the file's bytes. A segment exists in the archive only once its
manifest lists it: files a killed run left behind are removed by the next run.

Every file is written to a temporary name, flushed to disk and renamed, and the directory is
flushed after the rename, so a crash leaves either the old or the new version.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eventfleet.store import ids

FORMAT = 1
STREAMS = ("events", "outcomes", "dlq")
MANIFEST = "manifest.json"
TOP = "archive.json"
SUFFIX = ".jsonl.gz"


class ArchiveError(Exception):
    """The archive cannot be used: damaged, another namespace's, or in use."""


@dataclass
class Segment:
    file: str
    first: str
    last: str
    count: int
    sha256: str
    bytes: int


@dataclass
class Gap:
    """Entries deleted from Redis before the archive had them: ``(after, upto]``."""

    after: str
    upto: str


@dataclass
class Manifest:
    shard: str
    stream: str
    segments: list[Segment] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)

    @property
    def last(self) -> str:
        """The last entry id archived, ``0-0`` when none."""
        return self.segments[-1].last if self.segments else "0-0"

    @property
    def count(self) -> int:
        return sum(s.count for s in self.segments)

    @property
    def complete(self) -> bool:
        """Every entry the stream ever held up to ``last`` is in the segments."""
        return not self.gaps


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def stream_dir(root: Path, shard: str, stream: str) -> Path:
    return root / shard / stream


def load_manifest(root: Path, shard: str, stream: str) -> Manifest | None:
    path = stream_dir(root, shard, stream) / MANIFEST
    try:
        doc = json.loads(path.read_bytes())
        return Manifest(
            shard=doc["shard"],
            stream=doc["stream"],
            segments=[Segment(**s) for s in doc["segments"]],
            gaps=[Gap(**g) for g in doc.get("gaps", [])],
        )
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise ArchiveError(f"{path} is damaged: {exc}") from None


def save_manifest(root: Path, m: Manifest) -> None:
    doc = {"format": FORMAT, **asdict(m)}
    write_atomic(stream_dir(root, m.shard, m.stream) / MANIFEST, json.dumps(doc, indent=1).encode())


def grown_from(have: dict[str, object], want: dict[str, object]) -> bool:
    """Whether ``want`` is ``have`` with its shard counts grown online (each a multiple of the
    archive's: docs/DESIGN-DECISIONS.md, section 35)."""
    if any(have.get(k) != want[k] for k in ("format", "namespace")):
        return False
    for name in ("user_shards", "item_shards"):
        old, new = have.get(name), want[name]
        if type(old) is not int or type(new) is not int or old <= 0 or new % old:
            return False
    return True


def check_top(root: Path, namespace: str, users: int, items: int, create: bool) -> None:
    """The archive belongs to this namespace and shard counts (written on first use). An
    archive begun before the namespace grew online is this namespace's too: the writer records
    the grown counts, the reader takes it as it is."""
    want = {"format": FORMAT, "namespace": namespace, "user_shards": users, "item_shards": items}
    path = root / TOP
    try:
        have = json.loads(path.read_bytes())
    except FileNotFoundError:
        if not create:
            raise ArchiveError(f"{root} is not an eventfleet archive (no {TOP})") from None
        write_atomic(path, json.dumps(want).encode())
        return
    except ValueError as exc:
        raise ArchiveError(f"{path} is damaged: {exc}") from None
    if have != want and isinstance(have, dict) and grown_from(have, want):
        if create:
            write_atomic(path, json.dumps(want).encode())
        return
    if have != want:
        raise ArchiveError(
            f"{root} archives namespace {have.get('namespace')!r} with "
            f"{have.get('user_shards')}/{have.get('item_shards')} shards, not {namespace!r} with "
            f"{users}/{items}"
        )


def encode_line(entry_id: str, fields: dict[bytes, bytes]) -> bytes:
    text: dict[str, str] = {}
    binary: dict[str, str] = {}
    for k, v in fields.items():
        name = k.decode("utf-8", "replace")
        try:
            text[name] = v.decode("utf-8")
        except UnicodeDecodeError:
            binary[name] = base64.b64encode(v).decode()
    doc: dict[str, Any] = {"id": entry_id, "f": text}
    if binary:
        doc["b"] = binary
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode_line(line: bytes) -> tuple[str, dict[bytes, bytes]]:
    doc = json.loads(line)
    fields = {k.encode(): v.encode() for k, v in doc["f"].items()}
    for k, v in doc.get("b", {}).items():
        fields[k.encode()] = base64.b64decode(v)
    return str(doc["id"]), fields


class SegmentWriter:
    """Writes one segment to a temporary file; ``commit`` makes it final."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.tmp = directory / f".writing{SUFFIX}"
        self._raw = open(self.tmp, "wb")  # noqa: SIM115 (closed in commit)
        # mtime 0: the same entries give the same bytes, whichever run wrote them
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0, compresslevel=6)
        self.first = ""
        self.last = ""
        self.count = 0

    def add(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        self._gz.write(encode_line(entry_id, fields))
        self.first = self.first or entry_id
        self.last = entry_id
        self.count += 1

    def commit(self) -> Segment:
        self._gz.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        data = self.tmp.read_bytes()
        name = f"{self.first}_{self.last}{SUFFIX}"
        os.replace(self.tmp, self.directory / name)
        fsync_dir(self.directory)
        return Segment(
            name, self.first, self.last, self.count, hashlib.sha256(data).hexdigest(), len(data)
        )

    def abandon(self) -> None:
        self._gz.close()
        self._raw.close()
        self.tmp.unlink(missing_ok=True)


def remove_uncommitted(directory: Path, m: Manifest) -> int:
    """Delete files a killed run left that the manifest does not list; how many."""
    listed = {s.file for s in m.segments} | {MANIFEST}
    gone = 0
    for p in directory.iterdir():
        if p.is_file() and p.name not in listed:
            p.unlink()
            gone += 1
    return gone


def read_segment(directory: Path, seg: Segment) -> Iterator[tuple[str, dict[bytes, bytes]]]:
    """The entries of one segment, after checking its checksum, count and first/last ids."""
    path = directory / seg.file
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArchiveError(f"segment {path} listed in the manifest is missing") from None
    if hashlib.sha256(data).hexdigest() != seg.sha256:
        raise ArchiveError(f"segment {path} fails its sha256 check")
    try:
        lines = gzip.decompress(data).splitlines()
        entries = [decode_line(line) for line in lines]
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise ArchiveError(f"segment {path} cannot be read: {exc}") from None
    if len(entries) != seg.count or not entries:
        raise ArchiveError(f"segment {path} holds {len(entries)} entries, manifest {seg.count}")
    if entries[0][0] != seg.first or entries[-1][0] != seg.last:
        raise ArchiveError(f"segment {path} does not span {seg.first}..{seg.last}")
    yield from entries


def entries_between(
    directory: Path, segments: Iterable[Segment], after: str, until: str
) -> Iterator[tuple[str, dict[bytes, bytes]]]:
    """Archived entries with ``after < id <= until`` (``until`` may be ``+``), in order."""
    for seg in segments:
        if not ids.after(seg.last, after):
            continue
        if until != "+" and ids.after(seg.first, until):
            return
        for eid, fields in read_segment(directory, seg):
            if not ids.after(eid, after):
                continue
            if until != "+" and ids.after(eid, until):
                return
            yield eid, fields
