"""A JPEG's metadata removed without decoding it: its segments walked, the image data kept byte
for byte, so it decodes to exactly the pixels it had.

    clean = without_metadata(data)    # raises ValueError when the file is not a whole JPEG

Dropped: APP1 to APP15 (EXIF, XMP, ICC profile, IPTC, maker notes), except APP14, whose Adobe
colour transform the decoder needs, and comments; anything after the end-of-image marker (a
second picture, trailing bytes). Kept: APP0 (JFIF), tables, frame and scan headers and the
entropy-coded data. A file that stops before its end-of-image marker is refused as truncated.
"""

from __future__ import annotations

SOI, EOI, SOS, COM, APP14 = 0xD8, 0xD9, 0xDA, 0xFE, 0xEE
# Markers with no length field inside the entropy-coded data: a stuffed 0xFF and restarts.
_IN_SCAN = {0x00, *range(0xD0, 0xD8)}


def _metadata(marker: int) -> bool:
    return marker == COM or (0xE1 <= marker <= 0xEF and marker != APP14)


def without_metadata(data: bytes) -> bytes:
    """``data`` (a JPEG file) without its metadata segments; ValueError when it is malformed."""
    if data[:2] != bytes((0xFF, SOI)):
        raise ValueError("no JPEG start-of-image marker")
    kept, position, scanning = [data[:2]], 2, False
    scan_from = 0  # where the current scan's entropy-coded data begins
    while True:
        start = data.find(b"\xff", position) if scanning else position
        if start < 0 or start + 2 > len(data):
            raise ValueError("truncated: the file ends before its end-of-image marker")
        if data[start] != 0xFF:
            raise ValueError(f"no JPEG marker at byte {start}")
        marker = data[start + 1]
        if marker == 0xFF or (scanning and marker in _IN_SCAN):  # fill byte, or scan data
            position = start + 1 if marker == 0xFF else start + 2
            continue
        if scanning:
            kept.append(data[scan_from:start])
        if marker == EOI:
            kept.append(data[start:start + 2])
            return b"".join(kept)
        end = start + 2 + int.from_bytes(data[start + 2:start + 4], "big")
        if start + 4 > len(data) or end > len(data):
            raise ValueError("truncated: the file ends inside a segment")
        if not _metadata(marker):
            kept.append(data[start:end])
        position = scan_from = end
        scanning = scanning or marker == SOS
