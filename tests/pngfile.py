"""A minimal PNG reader for screenshot checks (8-bit RGB or RGBA, not interlaced: what Chromium writes), so the
tests need no image library. Returns the pixels as (r, g, b) tuples, row by row."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {2: 3, 6: 4}  # colour type -> bytes per pixel at 8 bits


def _paeth(left: int, up: int, up_left: int) -> int:
    estimate = left + up - up_left
    distances = (abs(estimate - left), abs(estimate - up), abs(estimate - up_left))
    return (left, up, up_left)[distances.index(min(distances))]


def _unfilter(kind: int, row: bytearray, previous: bytearray, step: int) -> None:
    for i in range(len(row)):
        left = row[i - step] if i >= step else 0
        up = previous[i]
        up_left = previous[i - step] if i >= step else 0
        if kind == 1:
            row[i] = (row[i] + left) & 0xFF
        elif kind == 2:
            row[i] = (row[i] + up) & 0xFF
        elif kind == 3:
            row[i] = (row[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            row[i] = (row[i] + _paeth(left, up, up_left)) & 0xFF


def read_png(path: Path) -> tuple[int, int, list[tuple[int, int, int]]]:
    """(width, height, pixels). Raises ValueError for what this reader does not handle."""
    data = path.read_bytes()
    if not data.startswith(SIGNATURE):
        raise ValueError(f"{path} is not a PNG")
    position, compressed, header = len(SIGNATURE), bytearray(), None
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed += body
    if header is None or header[2] != 8 or header[3] not in CHANNELS or header[6] != 0:
        raise ValueError(f"{path}: unsupported PNG header {header}")
    width, height, step = header[0], header[1], CHANNELS[header[3]]
    raw = zlib.decompress(bytes(compressed))
    stride = width * step
    previous = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    for y in range(height):
        start = y * (stride + 1)
        row = bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(raw[start], row, previous, step)
        pixels.extend((row[i], row[i + 1], row[i + 2]) for i in range(0, stride, step))
        previous = row
    return width, height, pixels


def chromium_screenshot(page: Path, screenshot: Path, width: int, height: int) -> list[tuple[int, int, int]]:
    """Render the HTML file `page` with headless Chromium (installed by scripts/bootstrap.sh) into `screenshot`
    at `width` x `height`; returns its pixels after checking that Chromium succeeded and the size is the one asked."""
    import subprocess

    shot = subprocess.run(
        [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--screenshot={screenshot}", f"--window-size={width},{height}", page.as_uri(),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    shown_width, shown_height, pixels = read_png(screenshot)
    assert (shown_width, shown_height) == (width, height)
    return pixels
