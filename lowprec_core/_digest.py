"""sha256 for identities and cache keys, without loading OpenSSL where the input is small.

hashlib's sha256 is OpenSSL's: about 10x faster than the interpreter's own (0.04 s against
0.41 s per 64 MB here), and loading it costs 3 MB of resident memory and 4 ms of start-up.
A small model (digits: 0.5 MB) is hashed sooner by the interpreter's own than OpenSSL is
loaded, and its command then stays within ORT's quantize_static's peak RSS. The digest is the
same either way.
"""

from __future__ import annotations

SMALL = 1 << 20  # bytes: up to here, the interpreter's sha256 costs less than loading OpenSSL's


def sha256(data: bytes = b"", *, size: int | None = None):
    """A sha256 hash object fed `data`; `size`: the bytes it will digest in all, where more
    follow through update() (default: len(data))."""
    if (len(data) if size is None else size) <= SMALL:
        try:
            from _sha2 import sha256 as own  # Python 3.12+
        except ImportError:
            try:
                from _sha256 import sha256 as own  # Python 3.11
            except ImportError:  # an interpreter built without it
                own = None
        if own is not None:
            return own(data)
    import hashlib

    return hashlib.sha256(data)
