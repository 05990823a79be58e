"""A deterministic, ClickHouse-shaped data tree for the benchmark.

The same (size, files, seed) always gives the same paths and the same bytes, so runs on different days and
machines archive the same data. The shape follows a ClickHouse data root with Atomic databases (facts.md):

    metadata/<db>.sql, metadata/<db>/<table>.sql, data/<db>/<table> -> ../../store/<3 hex>/<uuid>/ (symlinks)
    store/<3 hex>/<uuid>/format_version.txt
    store/<3 hex>/<uuid>/<partition>_<min block>_<max block>_<level>/   one directory per part:
        checksums.txt columns.txt count.txt default_compression_codec.txt metadata_version.txt partition.dat
        minmax_timestamp.idx primary.idx                                   (8 small files)
        <column>.bin <column>.cmrk2                                        (2 files per column)

Most files are small; most bytes are in a few large .bin files, because part sizes follow a heavy-tailed
(log-normal) law: many small fresh parts, a few large merged ones. The .bin contents are blocks of three
kinds mixed at random (see BLOCK_WEIGHTS); zstd -3 compresses the mix about 1.6x: not to nothing (all zeros),
not 1.0x (pure random). The benchmark prints the ratio it got.
"""

from __future__ import annotations

import math
import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

BLOCK = 128 << 10  # zstd's block size: one kind per zstd block, so each kind compresses as it would alone
SMALL_FILES_PER_PART = 8
# Block kinds of a .bin file, by weight: uniform random bytes (a column ClickHouse already compressed well),
# a 16-symbol alphabet (numbers, ids: zstd halves it), and "records", short slices of a small text dictionary
# (repeated strings: JSON keys, URLs, enum values; zstd gives ~6x). Not a 4-symbol alphabet: its endless short
# matches make gzip crawl at ~3 MB/s, which would flatter zstd against `tar -czf` unfairly.
ALPHABET_16 = bytes(0x30 + (value % 16) for value in range(256))
RECORD_ALPHABET = b'abcdefghijklmnopqrstuvwxyz0123456789_-/.:{}",= '
BLOCK_WEIGHTS = {"random": 0.4, "alphabet16": 0.3, "records": 0.3}
COLUMN_NAMES = (
    "uuid", "event", "properties", "timestamp", "team_id", "distinct_id", "elements_chain", "created_at",
    "person_id", "person_properties", "group0_properties", "session_id", "window_id", "url", "ip", "browser",
    "os", "device_type", "referrer", "lib", "lib_version", "sent_at", "_timestamp", "_offset",
)  # fmt: skip


@dataclass(frozen=True)
class Table:
    database: str
    name: str
    uuid: str
    columns: tuple[str, ...]

    @property
    def directory(self) -> str:
        return f"store/{self.uuid[:3]}/{self.uuid}"

    @property
    def files_per_part(self) -> int:
        return SMALL_FILES_PER_PART + 2 * len(self.columns)


@dataclass(frozen=True)
class Part:
    table: Table
    name: str
    rows: int
    bin_bytes: tuple[int, ...]  # one per column


@dataclass(frozen=True)
class TreeSummary:
    files: int
    directories: int
    symlinks: int
    bytes: int
    largest_file: int


def parse_size(text: str) -> int:
    """'500M', '2G', '1.5G', '12345' -> bytes (powers of 1024)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def format_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def plan_tables(rng: random.Random, files: int) -> list[tuple[Table, float]]:
    """A few databases' tables with a share of the parts each; one events-like table dominates, as in PostHog."""
    count = max(1, min(24, files // 2500))
    tables = []
    for index in range(count):
        columns = rng.randint(3, len(COLUMN_NAMES)) if index else len(COLUMN_NAMES)
        table = Table(
            database="posthog" if index % 3 else "default",
            name="events" if index == 0 else f"table_{index:02d}",
            uuid=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            columns=tuple(COLUMN_NAMES[:columns]),
        )
        share = 4.0 if index == 0 else rng.uniform(0.2, 1.0)
        tables.append((table, share))
    return tables


def plan_parts(size: int, files: int, seed: int) -> tuple[list[Table], list[Part]]:
    """Decide every part: how many per table, their rows and .bin sizes, so totals come near (size, files)."""
    rng = random.Random(seed)
    tables = plan_tables(rng, files)
    total_share = sum(share for _, share in tables)
    fixed_files = 2 * len(tables)  # metadata/<db>/<table>.sql and format_version.txt per table, roughly
    part_budget = max(len(tables), files - fixed_files)
    chosen: list[Table] = []
    for table, share in tables:
        parts = max(1, round(part_budget * share / total_share / table.files_per_part))
        chosen += [table] * parts
    weights = [rng.lognormvariate(0.0, 1.6) for _ in chosen]
    total_weight = sum(weights)
    small_overhead = 2200  # bytes of the small files of a typical part; the rest of the budget goes to .bin
    bin_budget = max(0, size - small_overhead * len(chosen))
    parts: list[Part] = []
    blocks: dict[str, int] = {}
    for table, weight in zip(chosen, weights, strict=True):
        part_bytes = bin_budget * weight / total_weight
        rows = max(1, int(part_bytes / (6 * len(table.columns))))
        column_weights = [rng.expovariate(1.0) + 0.05 for _ in table.columns]
        column_total = sum(column_weights)
        bin_bytes = tuple(max(16, int(part_bytes * w / column_total)) for w in column_weights)
        level = min(6, int(math.log2(1 + weight * 4)))
        first = blocks.get(table.uuid, 1)
        last = first + (2**level - 1 if level else 0)
        blocks[table.uuid] = last + 1
        partition = 202401 + rng.randrange(12)
        parts.append(Part(table, f"{partition}_{first}_{last}_{level}", rows, bin_bytes))
    return [table for table, _ in tables], parts


class ContentSource:
    """Seeded bytes: mixed-compressibility blocks for .bin files, random-ish bytes for small binary files."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed ^ 0x5EED)
        self.dictionary = bytes(RECORD_ALPHABET[b % len(RECORD_ALPHABET)] for b in self.rng.randbytes(1 << 14))

    def mixed(self, size: int) -> bytes:
        chunks = []
        remaining = size
        while remaining > 0:
            length = min(BLOCK, remaining)
            pick = self.rng.random()
            if pick < BLOCK_WEIGHTS["random"]:
                chunks.append(self.rng.randbytes(length))
            elif pick < BLOCK_WEIGHTS["random"] + BLOCK_WEIGHTS["alphabet16"]:
                chunks.append(self.rng.randbytes(length).translate(ALPHABET_16))
            else:
                chunks.append(self._records(length))
            remaining -= length
        return b"".join(chunks)

    def _records(self, size: int) -> bytes:
        """Slices of 4 to 67 bytes from random places in the dictionary, `size` bytes in all."""
        slices = []
        total = 0
        bits = self.rng.getrandbits
        dictionary = self.dictionary
        while total < size:
            draw = bits(20)
            start = draw & 0x3FFF
            length = 4 + (draw >> 14)
            slices.append(dictionary[start : start + length])
            total += length
        return b"".join(slices)[:size]

    def random(self, size: int) -> bytes:
        return self.rng.randbytes(size)


def small_files(part: Part, content: ContentSource) -> Iterator[tuple[str, bytes]]:
    granules = max(1, math.ceil(part.rows / 8192))
    columns = part.table.columns
    column_lines = "".join(f"`{name}` {'DateTime64(6)' if 'time' in name else 'String'}\n" for name in columns)
    yield "columns.txt", f"columns format version: 1\n{len(columns)} columns:\n{column_lines}".encode()
    yield "count.txt", str(part.rows).encode()
    yield "default_compression_codec.txt", b"CODEC(LZ4)"
    yield "metadata_version.txt", b"0"
    yield "partition.dat", content.random(4)
    yield "minmax_timestamp.idx", content.random(16)
    yield "primary.idx", content.mixed(min(1 << 20, 8 + 12 * granules))
    yield "checksums.txt", b"checksums format version: 4\n" + content.random(40 + 42 * part.table.files_per_part)


def write_tree(root: str, size: int, files: int, seed: int) -> TreeSummary:
    """Create the tree under `root` (an empty directory). Deterministic in (size, files, seed)."""
    tables, parts = plan_parts(size, files, seed)
    content = ContentSource(seed)
    counts = {"files": 0, "directories": 0, "symlinks": 0, "bytes": 0, "largest_file": 0}

    def make_directory(relative: str) -> None:
        os.makedirs(os.path.join(root, relative), exist_ok=True)
        counts["directories"] += 1

    def write(relative: str, data: bytes) -> None:
        with open(os.path.join(root, relative), "wb") as handle:
            handle.write(data)
        counts["files"] += 1
        counts["bytes"] += len(data)
        counts["largest_file"] = max(counts["largest_file"], len(data))

    for directory in ("metadata", "data", "store", "user_files", "preprocessed_configs", "tmp"):
        make_directory(directory)
    write("uuid", str(uuid.UUID(int=seed, version=4)).encode())
    write("preprocessed_configs/config.xml", b"<clickhouse><logger><level>warning</level></logger></clickhouse>\n")
    for database in sorted({table.database for table in tables}):
        write(f"metadata/{database}.sql", f"ATTACH DATABASE {database}\nENGINE = Atomic\n".encode())
        make_directory(f"metadata/{database}")
        make_directory(f"data/{database}")
    for table in tables:
        make_directory(table.directory)
        write(f"{table.directory}/format_version.txt", b"1")
        columns = ", ".join(f"`{name}` String" for name in table.columns)
        write(
            f"metadata/{table.database}/{table.name}.sql",
            f"ATTACH TABLE _ UUID '{table.uuid}'\n({columns})\nENGINE = MergeTree ORDER BY tuple()\n".encode(),
        )
        os.symlink(f"../../{table.directory}/", os.path.join(root, f"data/{table.database}/{table.name}"))
        counts["symlinks"] += 1
    for part in parts:
        directory = f"{part.table.directory}/{part.name}"
        make_directory(directory)
        for name, data in small_files(part, content):
            write(f"{directory}/{name}", data)
        granules = max(1, math.ceil(part.rows / 8192))
        for column, bin_size in zip(part.table.columns, part.bin_bytes, strict=True):
            write(f"{directory}/{column}.bin", content.mixed(bin_size))
            write(f"{directory}/{column}.cmrk2", content.mixed(min(1 << 20, 24 + 3 * granules)))
    return TreeSummary(**counts)
