"""Benchmark the upload pipeline: ms per image by size, and memory while refusing a bomb.

Prints one JSON object. Medians over repeated runs; the 6000×4000 JPEG is also
decoded at full size (no DCT scaling) in the same run, as the baseline the
reduced decode is compared with. The bomb is refused in a fresh process so its
peak RSS is not hidden by what this process already holds.

Run: ``.venv/bin/python -m worker.tools.bench_preprocess [--repeat N]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from worker.errors import ImageError
from worker.pipeline.preprocess import preprocess
from worker.tools.images import png_bomb

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 40_000_000}


def photo(size: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", size, (240, 238, 235))
    width, height = size
    image.paste((40, 45, 60), (width // 4, height // 8, width * 3 // 4, height * 7 // 8))
    return image


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=85)
    return buffer.getvalue()


def median_ms(function, repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        timings.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(timings), 2)


def full_decode(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        image.convert("L").resize((28, 28), Image.Resampling.LANCZOS)


# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the parent.
BOMB_CHILD = """
import sys


def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024



from worker.errors import ImageError
from worker.pipeline.preprocess import preprocess
data = open({path!r}, "rb").read()
before = peak_mb()
try:
    preprocess(data, max_bytes=20 * 1024 * 1024, max_pixels=40_000_000)
    code = None
except ImageError as exc:
    code = exc.code
after = peak_mb()
print(code, before, after)
"""


def bomb_peak_rss(tmp: Path) -> dict[str, object]:
    path = tmp / "bomb.png"
    path.write_bytes(png_bomb())
    output = subprocess.run(
        [sys.executable, "-c", BOMB_CHILD.format(path=str(path))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {
        "code": output[0],
        "bytes": path.stat().st_size,
        "peak_rss_mb_before": int(output[1]),
        "peak_rss_mb_after": int(output[2]),
    }


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_growth_over_bad_inputs(rounds: int) -> dict[str, float]:
    """Resident memory before and after feeding every bad input ``rounds`` times."""
    corpus = [
        b"",
        b"not an image at all" * 50,
        encode(photo((400, 300)), "JPEG")[:2000],
        b"\x89PNG\r\n\x1a\n" + bytes(64),
        png_bomb(),
        encode(Image.new("RGB", (1, 1)), "PNG"),
        encode(Image.new("RGB", (300, 300), (240, 240, 240)), "PNG"),
    ]

    def feed() -> None:
        for data in corpus:
            with contextlib.suppress(ImageError):
                preprocess(data, **LIMITS)

    feed()
    before = rss_mb()
    for _ in range(rounds):
        feed()
    return {
        "rounds": rounds,
        "inputs_per_round": len(corpus),
        "rss_mb_before": round(before, 1),
        "rss_mb_after": round(rss_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    arguments = parser.parse_args()
    small = encode(Image.new("L", (28, 28), 0), "PNG")
    medium = encode(photo((800, 1000)), "JPEG")
    large = encode(photo((6000, 4000)), "JPEG")
    result = {
        "png_28x28_ms": median_ms(lambda: preprocess(small, **LIMITS), arguments.repeat),
        "jpeg_800x1000_ms": median_ms(lambda: preprocess(medium, **LIMITS), arguments.repeat),
        "jpeg_6000x4000_ms": median_ms(lambda: preprocess(large, **LIMITS), arguments.repeat),
        "jpeg_6000x4000_full_decode_ms": median_ms(lambda: full_decode(large), 5),
    }
    result["reduced_decode_speedup"] = round(
        result["jpeg_6000x4000_full_decode_ms"] / result["jpeg_6000x4000_ms"], 1
    )
    with tempfile.TemporaryDirectory() as tmp:
        result["bomb"] = bomb_peak_rss(Path(tmp))
    result["bad_inputs_memory"] = rss_growth_over_bad_inputs(200)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
