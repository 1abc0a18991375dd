"""core/io/files.py: a file is written whole or not at all; the hash is the file's SHA-256."""
import hashlib
import json

import pytest

from iqa_map.core.io.files import atomic_path, sha256_file, write_bytes, write_json


def test_a_failed_write_leaves_the_earlier_file_and_no_part(tmp_path):
    path = tmp_path / "report.json"
    write_json(path, {"done": 1})
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_text('{"do')  # half-written when Ctrl-C arrives
            raise KeyboardInterrupt
    assert json.loads(path.read_text()) == {"done": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_write_creates_its_folder_and_replaces_the_file(tmp_path):
    path = tmp_path / "a" / "b" / "x.bin"
    write_bytes(path, b"old")
    write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and sorted(p.name for p in path.parent.iterdir()) == ["x.bin"]
    assert json.loads(write_json(tmp_path / "p.json", {"p": tmp_path}).read_text()) == {"p": str(tmp_path)}


def test_sha256_file_reads_in_chunks_the_whole_file(tmp_path):
    data = bytes(range(256)) * 9000  # over two 1 MiB chunks
    path = write_bytes(tmp_path / "w.safetensors", data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
