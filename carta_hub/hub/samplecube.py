"""A small sample image cube in FITS, written with the standard library only, so that a demo
account has something to open in CARTA.

FITS (the FITS Standard 4.0, sections 3-5): a header of 80-character ASCII cards ending with
``END``, padded with spaces to a multiple of 2880 bytes, then the data (here 32-bit IEEE
floats, big-endian, the first axis varying fastest), padded with zeros to a multiple of 2880.
"""

import math
import random
import sys
from array import array

BLOCK = 2880
CARD = 80


def card(keyword: str, value, comment: str = "") -> str:
    """One header card, in the fixed format (value right-justified in columns 11-30)."""
    if isinstance(value, bool):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, int):
        text = f"{value:>20}"
    elif isinstance(value, float):
        number = f"{value:.12G}"
        text = f"{number if '.' in number or 'E' in number else number + '.':>20}"
    else:
        quoted = str(value).replace("'", "''")
        text = f"'{quoted:<8}'"
    line = f"{keyword:<8}= {text}" + (f" / {comment}" if comment else "")
    if len(line) > CARD or not line.isascii():
        raise ValueError(f"FITS card too long or not ASCII: {line!r}")
    return f"{line:<{CARD}}"


def _padded(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % BLOCK)


def _plane(nx: int, ny: int, channel: int, channels: int, noise: random.Random) -> list[float]:
    """A Gaussian source circling the centre and widening with the channel, a fixed fainter
    source, and a little noise."""
    phase = 2 * math.pi * channel / channels
    cx, cy = nx / 2 + nx / 5 * math.cos(phase), ny / 2 + ny / 5 * math.sin(phase)
    width = 1.5 + 3.0 * channel / max(channels - 1, 1)
    values = []
    for y in range(ny):
        for x in range(nx):
            moving = math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width**2))
            fixed = 0.3 * math.exp(-((x - nx / 4) ** 2 + (y - 3 * ny / 4) ** 2) / 8)
            values.append(moving + fixed + noise.gauss(0, 0.01))
    return values


def sample_cube(nx: int = 64, ny: int = 64, channels: int = 16) -> bytes:
    """A FITS file: a ``nx`` x ``ny`` x ``channels`` cube in Jy/beam with a celestial
    (RA/Dec, SIN projection) and a frequency axis."""
    header = [
        card("SIMPLE", True, "conforms to the FITS standard"),
        card("BITPIX", -32, "32-bit IEEE floats"),
        card("NAXIS", 3),
        card("NAXIS1", nx),
        card("NAXIS2", ny),
        card("NAXIS3", channels),
        card("OBJECT", "carta-hub sample"),
        card("BUNIT", "Jy/beam"),
        card("BMAJ", 3 / 3600, "beam major axis (deg)"),
        card("BMIN", 2 / 3600, "beam minor axis (deg)"),
        card("BPA", 30.0, "beam position angle (deg)"),
        card("RADESYS", "ICRS"),
        card("CTYPE1", "RA---SIN"),
        card("CRVAL1", 83.8221, "deg"),
        card("CDELT1", -1 / 3600, "deg"),
        card("CRPIX1", nx / 2 + 1.0),
        card("CUNIT1", "deg"),
        card("CTYPE2", "DEC--SIN"),
        card("CRVAL2", -5.3911, "deg"),
        card("CDELT2", 1 / 3600, "deg"),
        card("CRPIX2", ny / 2 + 1.0),
        card("CUNIT2", "deg"),
        card("CTYPE3", "FREQ"),
        card("CRVAL3", 1.4204058e9, "Hz"),
        card("CDELT3", 1.0e5, "Hz"),
        card("CRPIX3", 1.0),
        card("CUNIT3", "Hz"),
        card("SPECSYS", "LSRK"),
        card("RESTFRQ", 1.420405752e9, "HI line (Hz)"),
        f"{'END':<{CARD}}",
    ]
    noise = random.Random(0)
    data = array("f", (v for k in range(channels) for v in _plane(nx, ny, k, channels, noise)))
    if sys.byteorder == "little":
        data.byteswap()
    return _padded("".join(header).encode("ascii"), b" ") + _padded(data.tobytes(), b"\0")
