"""Fetch a bundle from a URI into a local directory, then verify it.

Supported: a local path or ``file://`` URI (directory or archive), ``http(s)://`` (an archive
``.tar.gz``/``.tgz``/``.tar``/``.zip``, or a bundle directory served over HTTP: ``manifest.json`` is
fetched first, then every file it lists), and ``s3://bucket/key`` (archive or prefix; needs
boto3, the ``s3`` extra; ``AWS_ENDPOINT_URL`` etc. are honoured by boto3), and what an MLflow
tracking server stores (:mod:`.mlflow_registry`): ``mlflow-artifacts:/<path>`` through its artifact
HTTP API and ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` through its Model Registry,
with ``MLFLOW_TRACKING_URI`` and MLflow's credential variables; those credentials are also sent
with http(s) requests to that server (the URLs the operator writes for registry versions).

Every fetched bundle goes through ``verify_bundle`` (manifest sha256 against the pinned value when
given, sha256 of every file); anything else is an error, never a partial load.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from .bundle.format import MANIFEST, Bundle, BundleError, sha256_bytes
from .bundle.read import verify_bundle
from .mlflow_registry import MlflowError, MlflowServer

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
DEFAULT_MAX_BYTES = 2 << 30


class FetchError(BundleError):
    """The bundle could not be downloaded or unpacked."""


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _safe_member(name: str) -> bool:
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts


def extract_archive(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` into ``dest`` safely; return the directory that holds manifest.json."""
    dest.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if not _safe_member(info.filename):
                        raise FetchError(f"archive member {info.filename!r} escapes the bundle directory")
                zf.extractall(dest)  # noqa: S202 - every member name was checked above
        else:
            with tarfile.open(archive) as tf:
                # the "data" filter rejects absolute paths, "..", links pointing out, device files
                tf.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise FetchError(f"cannot unpack {archive.name}: {exc}") from exc
    if (dest / MANIFEST).is_file():
        return dest
    subdirs = [p for p in dest.iterdir() if p.is_dir()]
    if len(subdirs) == 1 and (subdirs[0] / MANIFEST).is_file():
        return subdirs[0]
    raise FetchError(f"archive {archive.name} holds no manifest.json (at its root or in one top directory)")


def _mlflow_headers(url: str) -> dict[str, str]:
    """MLflow credentials from the environment, for URLs on MLFLOW_TRACKING_URI only."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return {}
    try:
        server = MlflowServer.from_env()
    except MlflowError:
        return {}
    return server.headers() if server.owns(url) else {}


def _http_get(url: str, dest: Path, *, timeout: float, max_bytes: int) -> None:
    if not url.startswith(("http://", "https://")):
        raise FetchError(f"not an http(s) URL: {url}")
    headers = {"User-Agent": "mlcanary-serving", **_mlflow_headers(url)}
    req = urllib.request.Request(url, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp, dest.open("wb") as f:  # noqa: S310
            total = 0
            while chunk := resp.read(1 << 20):
                total += len(chunk)
                if total > max_bytes:
                    raise FetchError(f"{url}: larger than the limit of {max_bytes} bytes")
                f.write(chunk)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"GET {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise FetchError(f"GET {url}: {exc}") from exc


def _fetch_http(uri: str, work: Path, *, timeout: float, max_bytes: int) -> Path:
    path = urllib.parse.urlparse(uri).path
    if is_archive(path):
        arch = work / PurePosixPath(path).name
        _http_get(uri, arch, timeout=timeout, max_bytes=max_bytes)
        return extract_archive(arch, work / "bundle")
    if path.endswith("/" + MANIFEST):
        base = uri.rsplit("/", 1)[0] + "/"
    else:
        base = uri if uri.endswith("/") else uri + "/"
    out = work / "bundle"
    out.mkdir(parents=True)
    _http_get(urllib.parse.urljoin(base, MANIFEST), out / MANIFEST, timeout=timeout, max_bytes=max_bytes)
    for name in _listed_files(out / MANIFEST):
        _http_get(
            urllib.parse.urljoin(base, urllib.parse.quote(name)),
            out / name,
            timeout=timeout,
            max_bytes=max_bytes,
        )
    return out


def _listed_files(manifest: Path) -> list[str]:
    try:
        files = json.loads(manifest.read_bytes())["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise FetchError(f"manifest.json is not a bundle manifest: {exc}") from exc
    names = [str(n) for n in files]
    for n in names:
        if "/" in n or n.startswith(".") or n == MANIFEST:
            raise FetchError(f"manifest.json lists an illegal file name {n!r}")
    return names


def _fetch_s3(uri: str, work: Path, s3_client: Any | None) -> Path:
    parsed = urllib.parse.urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if s3_client is None:
        try:
            import boto3  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise FetchError("s3:// bundles need boto3: pip install 'mlcanary[s3]'") from exc
        s3_client = boto3.client("s3")
    try:
        if is_archive(key):
            arch = work / PurePosixPath(key).name
            s3_client.download_file(bucket, key, str(arch))
            return extract_archive(arch, work / "bundle")
        prefix = key if key.endswith("/") or not key else key + "/"
        out = work / "bundle"
        out.mkdir(parents=True)
        s3_client.download_file(bucket, prefix + MANIFEST, str(out / MANIFEST))
        for name in _listed_files(out / MANIFEST):
            s3_client.download_file(bucket, prefix + name, str(out / name))
        return out
    except FetchError:
        raise
    except Exception as exc:
        raise FetchError(f"s3 fetch of {uri} failed: {exc}") from exc


def fetch_bundle(
    uri: str,
    cache_dir: str | Path | None = None,
    *,
    expected_sha256: str | None = None,
    timeout: float = 30.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    retries: int = 0,
    s3_client: Any | None = None,
) -> Bundle:
    """Fetch ``uri`` (path, file://, http(s)://, s3://, mlflow-artifacts:, models:), unpack if
    needed, verify, return the bundle.

    Network errors are retried ``retries`` times with backoff; integrity errors never are.
    """
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("mlflow-artifacts", "models"):
        server = MlflowServer.from_env()
        server = MlflowServer(server.tracking_uri, server.token, server.username, server.password, timeout)
        uri = server.download_url(uri) if scheme == "mlflow-artifacts" else server.resolve_models_uri(uri)
        scheme = urllib.parse.urlparse(uri).scheme.lower()
    if scheme in ("", "file"):
        local = Path(urllib.parse.unquote(parsed.path) if scheme == "file" else uri)
        if local.is_dir():
            return verify_bundle(local, expected_sha256)
        if local.is_file() and is_archive(local.name):
            work = Path(tempfile.mkdtemp(prefix="bundle-", dir=_cache(cache_dir)))
            return verify_bundle(extract_archive(local, work / "bundle"), expected_sha256)
        raise FetchError(f"bundle not found: {local} (a directory or a .tar.gz/.tgz/.tar/.zip archive)")
    if scheme not in ("http", "https", "s3"):
        raise FetchError(
            f"unsupported bundle URI scheme {scheme!r} in {uri} (file, http, https, s3, mlflow-artifacts, models)"
        )
    attempt = 0
    while True:
        work = Path(tempfile.mkdtemp(prefix="bundle-", dir=_cache(cache_dir)))
        try:
            if scheme == "s3":
                path = _fetch_s3(uri, work, s3_client)
            else:
                path = _fetch_http(uri, work, timeout=timeout, max_bytes=max_bytes)
            break
        except FetchError as exc:
            shutil.rmtree(work, ignore_errors=True)
            if attempt >= retries or "HTTP 4" in str(exc):
                raise
            attempt += 1
            delay = min(2.0**attempt, 30.0)
            log.warning("bundle fetch failed (%s); retry %d/%d in %.0fs", exc, attempt, retries, delay)
            time.sleep(delay)
    return verify_bundle(path, expected_sha256)


def _cache(cache_dir: str | Path | None) -> str:
    d = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "mlcanary-bundles"
    d.mkdir(parents=True, exist_ok=True)
    return str(d)


__all__ = ["FetchError", "extract_archive", "fetch_bundle", "is_archive", "sha256_bytes"]
