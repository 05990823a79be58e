"""What restore and verify both ask of an archive and its manifest, answered in one place (verify.py)."""

from pathlib import Path

import pytest

from coord.policy import Compression
from coord.verify import archive_compression, archive_is_encrypted


def test_encrypted_by_name_or_by_manifest() -> None:
    assert archive_is_encrypted(Path("v/a.tar.zst.gpg"), None)
    assert archive_is_encrypted(Path("v/a.tar.zst"), {"encryption": {"method": "passphrase"}})
    assert not archive_is_encrypted(Path("v/a.tar.zst"), {"encryption": None})
    assert not archive_is_encrypted(Path("v/a.tar.gz"), None)


def test_compression_from_the_manifest_first_then_the_name() -> None:
    assert archive_compression(Path("v/a.tar.zst"), {"compression": "gzip"}) is Compression.GZIP
    assert archive_compression(Path("v/a.tar.gz.gpg"), None) is Compression.GZIP
    assert archive_compression(Path("v/a.tar.zst"), {"compression": None}) is Compression.ZSTD
    with pytest.raises(ValueError):
        archive_compression(Path("v/a.tar.zst"), {"compression": "lz4"})
