"""Fetching bundles: file://, plain paths, archives, http:// (real local server), s3:// (fake client)."""

from __future__ import annotations

import functools
import http.server
import io
import shutil
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlcanary_serving.bundle import BuildResult, BundleError, make_archive
from mlcanary_serving.fetch import FetchError, fetch_bundle


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_local_directory_path_and_file_uri(bundles: dict[str, BuildResult]) -> None:
    p = bundles["onnx"].path
    assert fetch_bundle(str(p)).manifest.version == "1.0.0"
    assert fetch_bundle(p.as_uri()).manifest.version == "1.0.0"
    assert fetch_bundle(p.as_uri(), expected_sha256=bundles["onnx"].manifest_sha256).path == p


def test_local_archives(tmp_path: Path, bundles: dict[str, BuildResult]) -> None:
    tgz = bundles["hgb"].archive
    assert tgz is not None
    b = fetch_bundle(tgz.as_uri(), tmp_path / "cache", expected_sha256=bundles["hgb"].manifest_sha256)
    assert b.manifest.version == "2.0.0" and b.path.is_relative_to(tmp_path / "cache")
    # a zip with the bundle in one top-level directory
    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in bundles["onnx"].path.iterdir():
            zf.write(f, f"bundle-1.0.0/{f.name}")
    assert fetch_bundle(str(z), tmp_path / "cache").manifest.version == "1.0.0"


def test_archive_with_path_traversal_is_rejected(tmp_path: Path) -> None:
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../../escape.txt", "x")
    with pytest.raises(FetchError, match="escapes"):
        fetch_bundle(str(z), tmp_path / "cache")
    t = tmp_path / "evil.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(FetchError, match="cannot unpack"):
        fetch_bundle(str(t), tmp_path / "cache")
    assert not (tmp_path / "escape.txt").exists()


def test_missing_and_unsupported(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="not found"):
        fetch_bundle(str(tmp_path / "nope"))
    with pytest.raises(FetchError, match="unsupported bundle URI scheme"):
        fetch_bundle("ftp://example.invalid/x.tar.gz")


def test_http_archive(tmp_path: Path, http_root: tuple[Path, str], bundles: dict[str, BuildResult]) -> None:
    root, base = http_root
    assert bundles["hgb"].archive is not None
    shutil.copy(bundles["hgb"].archive, root / "hgb.tar.gz")
    b = fetch_bundle(f"{base}/hgb.tar.gz", tmp_path / "cache", expected_sha256=bundles["hgb"].manifest_sha256)
    assert b.manifest.name == "breast-cancer" and b.manifest.version == "2.0.0"


def test_http_directory(tmp_path: Path, http_root: tuple[Path, str], bundles: dict[str, BuildResult]) -> None:
    root, base = http_root
    shutil.copytree(bundles["onnx"].path, root / "v1")
    for uri in (f"{base}/v1", f"{base}/v1/", f"{base}/v1/manifest.json"):
        assert fetch_bundle(uri, tmp_path / "cache").manifest.version == "1.0.0"


def test_http_tampered_and_missing(
    tmp_path: Path, http_root: tuple[Path, str], bundles: dict[str, BuildResult]
) -> None:
    root, base = http_root
    shutil.copytree(bundles["onnx"].path, root / "v1")
    (root / "v1" / "model_card.md").write_text("tampered")
    with pytest.raises(BundleError, match=r"model_card.md: (size|sha256)"):
        fetch_bundle(f"{base}/v1/", tmp_path / "cache")
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_bundle(f"{base}/missing.tar.gz", tmp_path / "cache", retries=2)


def test_http_size_limit(
    tmp_path: Path, http_root: tuple[Path, str], bundles: dict[str, BuildResult]
) -> None:
    root, base = http_root
    make_archive(bundles["onnx"].path, root / "b.tar.gz")
    with pytest.raises(FetchError, match="larger than the limit"):
        fetch_bundle(f"{base}/b.tar.gz", tmp_path / "cache", max_bytes=100)


def test_connection_refused_is_retried_then_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mlcanary_serving.fetch.time.sleep", lambda s: None)
    calls: list[str] = []
    real = __import__("mlcanary_serving.fetch", fromlist=["_http_get"])._http_get

    def spy(url: str, dest: Path, **kw: Any) -> None:
        calls.append(url)
        real(url, dest, **kw)

    monkeypatch.setattr("mlcanary_serving.fetch._http_get", spy)
    with pytest.raises(FetchError):
        fetch_bundle("http://127.0.0.1:9/b.tar.gz", tmp_path / "cache", retries=2, timeout=1)
    assert len(calls) == 3


class FakeS3:
    def __init__(self, objects: dict[tuple[str, str], bytes]) -> None:
        self.objects = objects

    def download_file(self, bucket: str, key: str, filename: str) -> None:
        try:
            Path(filename).write_bytes(self.objects[(bucket, key)])
        except KeyError:
            raise RuntimeError(f"NoSuchKey: {key}") from None


def test_s3_prefix_and_archive(tmp_path: Path, bundles: dict[str, BuildResult]) -> None:
    objs = {("models", f"bc/v1/{f.name}"): f.read_bytes() for f in bundles["onnx"].path.iterdir()}
    assert bundles["hgb"].archive is not None
    objs[("models", "bc/hgb.tar.gz")] = bundles["hgb"].archive.read_bytes()
    s3 = FakeS3(objs)
    assert fetch_bundle("s3://models/bc/v1", tmp_path / "c", s3_client=s3).manifest.version == "1.0.0"
    assert fetch_bundle("s3://models/bc/hgb.tar.gz", tmp_path / "c", s3_client=s3).manifest.version == "2.0.0"
    with pytest.raises(FetchError, match="NoSuchKey"):
        fetch_bundle("s3://models/nope/", tmp_path / "c", s3_client=s3)
