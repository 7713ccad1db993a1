"""dssh reads GNU tar headers itself (tarfile's parser costs most of the time of 5,000
small files); here it must agree with tarfile on what GNU tar writes."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from distribute_ssh.transfer import _Cut, _parse_header


def test_headers_agree_with_tarfile(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / ("d" * 120)).mkdir(parents=True)
    names = ["a.txt", "empty", "new\nline", "back\\slash", "-dash", "sp ace", "ünï",
             ("d" * 120) + "/" + ("long" * 40)]
    for i, n in enumerate(names):
        (src / n).write_bytes(os.urandom(i * 700))
    (src.joinpath(os.fsdecode(b"caf\xe9"))).write_bytes(b"x" * 513)
    data = subprocess.run(["tar", "-c", "-f", "-", "--format=gnu", "-C", str(src), "."],
                          check=True, capture_output=True).stdout
    seen = []
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8",
                      errors="surrogateescape") as tf:
        for m in tf:
            block = data[m.offset:m.offset + 512]
            kind, size, name = _parse_header(block)
            if kind == tarfile.GNUTYPE_LONGNAME:
                continue
            assert kind == m.type and size == m.size
            if len(m.name) < 100:
                assert name.rstrip("/") == m.name  # (tarfile drops a dir's trailing /)
            seen.append(m.name)
    assert "./caf\udce9" in seen and "./new\nline" in seen


def test_a_damaged_header_is_refused() -> None:
    info = tarfile.TarInfo("x.csv")
    info.size = 5
    block = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    assert _parse_header(bytes(block))[1:] == (5, "x.csv")
    block[0] ^= 1
    with pytest.raises(_Cut):
        _parse_header(bytes(block))


def test_sizes_of_8_gib_and_more_in_base_256() -> None:
    info = tarfile.TarInfo("huge.bin")
    info.size = 10 << 30
    block = info.tobuf(tarfile.GNU_FORMAT)
    assert _parse_header(block)[1] == 10 << 30
