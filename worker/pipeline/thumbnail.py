"""Review-page thumbnails, decoded the one bounded way the worker decodes an upload.

``make`` reads a photo with ``preprocess.decode`` (the byte, format and pixel limits;
a JPEG decoded reduced, anything else reduced a band at a time to at most 2 048
pixels a side), ``flatten`` (upright by EXIF, the first frame, alpha on white),
then shrinks it to ``THUMBNAIL_PIXELS`` and encodes a JPEG. A 6324×6324 RGBA PNG
costs this process ~275 MB at its peak, OpenCV's import included.

Where it runs (never in the API process, which must not load OpenCV and serves
every tenant): the worker makes one for each upload it flags ``uncertain``, once
the answer is committed, and stores it beside the upload (``storage.thumbnail_key``).
For a photo without one (a catalog product, an upload from before), the review page
runs ``python -m worker.pipeline.thumbnail`` once and stores what it prints.
"""

from __future__ import annotations

import io
import resource
import sys

from worker.errors import FashionError
from worker.pipeline.preprocess import decode, flatten

#: Pixels on the long side of a thumbnail.
THUMBNAIL_PIXELS = 320
#: The child's address space: room for OpenCV, NumPy and a 50 Mpx decode.
CHILD_MEMORY_BYTES = 2 * 1024**3


def make(data: bytes, *, max_bytes: int, max_pixels: int) -> bytes:
    """A JPEG of at most ``THUMBNAIL_PIXELS`` on the long side, upright, alpha on white;
    an ``ImageError`` for what the worker would refuse."""
    image = flatten(decode(data, max_bytes=max_bytes, max_pixels=max_pixels))
    image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


def main() -> None:
    """The child: ``python -m worker.pipeline.thumbnail MAX_BYTES MAX_PIXELS``, a photo
    on stdin, its thumbnail on stdout; what the worker would refuse exits 2 with the
    reason on stderr. It caps its own address space first (``preexec_fn`` is not safe
    in the API's threaded process)."""
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))
    max_bytes, max_pixels = (int(value) for value in sys.argv[1:3])
    try:
        thumbnail = make(sys.stdin.buffer.read(), max_bytes=max_bytes, max_pixels=max_pixels)
    except FashionError as exc:
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        sys.exit(2)
    sys.stdout.buffer.write(thumbnail)


if __name__ == "__main__":
    main()
