"""Cost of the per-chunk CRC32C on the decode path: checksum time vs Blosc decode time.

The chunk is the TopTagging-shaped one of ``test_store_read.py`` (16,384 x 200 x 4
float32 would be 52 MB; the store's chunks hold ~3.3 MB), LZ4 as the store writes it.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastload as fl


def _raw_chunk(store: fl.Store) -> tuple[bytes, int]:
    decoder = store["train"].reader("X")
    raw = bytes(decoder.files.read(decoder.chunk_key(0), 2**31))
    return raw, decoder.chunk_nbytes


@pytest.mark.bench
def test_crc32c_of_one_chunk(benchmark, toptagging_store: fl.Store) -> None:
    """google_crc32c over one encoded chunk (what the decoder verifies before decoding)."""
    import google_crc32c

    raw, nbytes = _raw_chunk(toptagging_store)
    body = np.frombuffer(raw, dtype=np.uint8)[:-4]
    benchmark(google_crc32c.value, body)
    benchmark.extra_info["encoded_MB"] = body.nbytes / 1e6
    benchmark.extra_info["decoded_MB"] = nbytes / 1e6


@pytest.mark.bench
def test_blosc_decode_of_one_chunk(benchmark, toptagging_store: fl.Store) -> None:
    """Blosc decode of the same chunk into a reused buffer (the baseline the CRC adds to)."""
    from numcodecs import blosc

    raw, nbytes = _raw_chunk(toptagging_store)
    frame = memoryview(raw)[:-4]
    out = np.empty(nbytes, dtype=np.uint8)
    blosc.use_threads = False  # as in the loader's workers
    benchmark(blosc.decompress, frame, out)
    benchmark.extra_info["decoded_MB"] = nbytes / 1e6
