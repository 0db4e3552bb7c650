"""Bundle build and verify: manifest, integrity chain, pickle safety, ONNX parity, CLI."""

from __future__ import annotations

import builtins
import json
import shutil
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from mlcanary_serving import cli
from mlcanary_serving.bundle import (
    MANIFEST,
    BuildResult,
    BundleError,
    build_bundle,
    load_joblib_verified,
    sha256_file,
    verify_bundle,
)
from mlcanary_serving.bundle.onnx_export import OnnxExportError
from mlcanary_serving.runtime import load_runtime
from mlcanary_serving.testing import demo_data, demo_pipeline


def copy(res: BuildResult, dest: Path) -> Path:
    return Path(shutil.copytree(res.path, dest))


def test_manifest_records_everything_the_issue_asks_for(bundles: dict[str, BuildResult]) -> None:
    b = verify_bundle(bundles["onnx"].path)
    m = b.manifest.raw
    assert m["name"] == "breast-cancer" and m["version"] == "1.0.0" and m["format"] == "onnx"
    assert m["created_at"].endswith("+00:00")
    assert {"python", "scikit-learn", "numpy", "skl2onnx", "onnx"} <= set(m["training"]["libraries"])
    files = set(m["files"])
    assert files == {
        "model.onnx",
        "schema.json",
        "reference.json",
        "model_card.json",
        "model_card.md",
        "sample.json",
    }
    rows = b.sample_rows()
    assert len(rows) == 32 and len({tuple(r) for r in rows}) == 32 and len(rows[0]) == 30
    for name, meta in m["files"].items():
        assert sha256_file(bundles["onnx"].path / name) == meta["sha256"]
    assert (
        b.manifest_sha256 == bundles["onnx"].manifest_sha256 == sha256_file(bundles["onnx"].path / MANIFEST)
    )
    # schema: names, types, ranges, required
    f0 = b.schema.features[0]
    assert (f0.name, f0.type, f0.required) == ("mean radius", "float", True)
    X, _, _ = demo_data()
    assert f0.min == pytest.approx(X[:, 0].min()) and f0.max == pytest.approx(X[:, 0].max())
    # reference: quantile bins per feature, training prediction distribution
    assert len(b.reference.feature_edges) == 30
    assert all(abs(sum(p) - 1) < 1e-9 for p in b.reference.feature_proportions)
    assert b.reference.score_kind == "probability" and abs(sum(b.reference.score_proportions) - 1) < 1e-9
    # model card: intended use, metrics, subgroups
    card = b.model_card
    assert "Not for clinical use" in card["intended_use"]
    assert card["training_metrics"]["accuracy"] > 0.95
    assert set(card["subgroups"]["mean radius (vs median)"]) == {"large", "small"}
    # parity measured and recorded
    parity = m["onnx"]["parity"]
    assert parity["passed"] and parity["label_agreement"] == 1.0 and parity["max_abs_score_diff"] < 1e-6


def test_hgb_float64_export_is_exact(bundles: dict[str, BuildResult]) -> None:
    parity = bundles["hgb"].manifest["onnx"]["parity"]
    assert parity["precision"] == "float64"
    assert parity["label_agreement"] == 1.0 and parity["max_abs_score_diff"] < 1e-6


def test_hgb_float32_export_is_refused(tmp_path: Path) -> None:
    """The float32 HGB export shifts probabilities by ~0.1: build must refuse it."""
    X, y, names = demo_data()
    pipe = demo_pipeline("good", "hgb")
    with pytest.raises(OnnxExportError, match="disagrees") as exc:
        build_bundle(pipe, X, y, tmp_path / "b", name="hgb", version="1.0.0", feature_names=names,
                     onnx=True, onnx_precision="float32")  # fmt: skip
    assert "training-serving skew" in str(exc.value)
    assert not (tmp_path / "b" / "model.onnx").exists()
    # "auto" falls back to joblib and records the measured disagreement
    res = build_bundle(pipe, X, y, tmp_path / "c", name="hgb", version="1.0.0", feature_names=names,
                       onnx="auto", onnx_precision="float32")  # fmt: skip
    assert res.manifest["format"] == "joblib"
    assert res.manifest["onnx"]["parity"]["max_abs_score_diff"] > 0.01
    assert "disagrees" in res.manifest["onnx"]["refused"]


def test_tolerance_forces_refusal(tmp_path: Path) -> None:
    X, y, names = demo_data()
    with pytest.raises(OnnxExportError, match="tolerance"):
        build_bundle(demo_pipeline(), X, y, tmp_path / "b", name="m", version="1.0.0", feature_names=names,
                     onnx=True, score_tolerance=-1.0)  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad Name!", "version": "1.0.0"}, "name"),
        ({"name": "ok", "version": "v1"}, "semantic version"),
        ({"name": "ok", "version": "1.0.0", "feature_names": ["a"]}, "feature names"),
    ],
)
def test_build_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    X, y, _ = demo_data()
    with pytest.raises(ValueError, match=message):
        build_bundle(demo_pipeline(), X, y, tmp_path / "b", onnx=False, **kwargs)


def test_verify_detects_tampered_file(tmp_path: Path, bundles: dict[str, BuildResult]) -> None:
    d = copy(bundles["onnx"], tmp_path / "b")
    verify_bundle(d)
    schema = json.loads((d / "schema.json").read_text())
    schema["features"][0]["max"] = 1e9
    (d / "schema.json").write_text(json.dumps(schema))
    with pytest.raises(BundleError, match=r"schema.json: (size|sha256)"):
        verify_bundle(d)


def test_verify_detects_flipped_byte_in_model(tmp_path: Path, bundles: dict[str, BuildResult]) -> None:
    d = copy(bundles["onnx"], tmp_path / "b")
    data = bytearray((d / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx: sha256"):
        verify_bundle(d)


def test_verify_rejects_unlisted_and_missing_files(tmp_path: Path, bundles: dict[str, BuildResult]) -> None:
    d = copy(bundles["onnx"], tmp_path / "b")
    (d / "extra.py").write_text("print('hi')")
    with pytest.raises(BundleError, match="not listed"):
        verify_bundle(d)
    (d / "extra.py").unlink()
    (d / "reference.json").unlink()
    with pytest.raises(BundleError, match=r"reference\.json listed in manifest\.json is missing"):
        verify_bundle(d)


def test_verify_checks_pinned_manifest_sha(bundles: dict[str, BuildResult]) -> None:
    good = bundles["onnx"].manifest_sha256
    assert verify_bundle(bundles["onnx"].path, good).manifest_sha256 == good
    assert verify_bundle(bundles["onnx"].path, "sha256:" + good.upper().lower()).manifest_sha256 == good
    with pytest.raises(BundleError, match="does not match the expected"):
        verify_bundle(bundles["onnx"].path, "0" * 64)


def test_manifest_edit_is_caught_by_the_pin(tmp_path: Path, bundles: dict[str, BuildResult]) -> None:
    """Someone rewrites manifest + file consistently: only the pinned manifest sha catches it."""
    d = copy(bundles["onnx"], tmp_path / "b")
    man = json.loads((d / MANIFEST).read_text())
    man["version"] = "9.9.9"
    (d / MANIFEST).write_text(json.dumps(man))
    verify_bundle(d)  # internally consistent
    with pytest.raises(BundleError, match="does not match the expected"):
        verify_bundle(d, bundles["onnx"].manifest_sha256)


class Evil:
    """Unpickling this creates a file: stands in for arbitrary code execution."""

    marker = ""

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (builtins.open, (self.marker, "w"))


def test_pickle_is_not_loaded_when_sha_mismatches(tmp_path: Path, bundles: dict[str, BuildResult]) -> None:
    marker = tmp_path / "pwned"
    evil = Evil()
    evil.marker = str(marker)
    # control: unpickling the payload does run code (so the assertion below can fail)
    joblib.dump(evil, tmp_path / "control.joblib")
    joblib.load(tmp_path / "control.joblib")
    assert marker.exists()
    marker.unlink()

    d = copy(bundles["joblib"], tmp_path / "b")
    joblib.dump(evil, d / "model.joblib")
    with pytest.raises(BundleError, match=r"model\.joblib"):
        verify_bundle(d)
    assert not marker.exists()


def test_pickle_swapped_after_verify_is_not_loaded(tmp_path: Path, bundles: dict[str, BuildResult]) -> None:
    d = copy(bundles["joblib"], tmp_path / "b")
    b = verify_bundle(d)
    marker = tmp_path / "pwned"
    evil = Evil()
    evil.marker = str(marker)
    joblib.dump(evil, d / "model.joblib")  # swapped between verify and load
    with pytest.raises(BundleError, match="refusing to unpickle"):
        load_joblib_verified(b)
    assert not marker.exists()


def test_onnx_swapped_after_verify_is_not_loaded(tmp_path: Path, bundles: dict[str, BuildResult]) -> None:
    d = copy(bundles["onnx"], tmp_path / "b")
    b = verify_bundle(d)
    (d / "model.onnx").write_bytes((bundles["hgb"].path / "model.onnx").read_bytes())
    with pytest.raises(BundleError, match="changed after verification"):
        load_runtime(b, 1)


def test_joblib_and_onnx_runtimes_agree(bundles: dict[str, BuildResult]) -> None:
    X, _, _ = demo_data()
    a = load_runtime(verify_bundle(bundles["onnx"].path), 1).predict(X)
    b = load_runtime(verify_bundle(bundles["joblib"].path), 1).predict(X)
    assert a.labels == b.labels
    assert np.max(np.abs(a.scores - b.scores)) < 1e-6


def test_cli_build_and_verify_from_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    X, y, names = demo_data()
    joblib.dump(demo_pipeline(), tmp_path / "pipe.joblib")
    header = ",".join([*(n.replace(",", " ") for n in names), "target"])
    rows = "\n".join(",".join([*map(repr, map(float, x)), str(int(t))]) for x, t in zip(X, y, strict=True))
    (tmp_path / "train.csv").write_text(header + "\n" + rows + "\n")
    rc = cli.main(["bundle", "build", "--pipeline", str(tmp_path / "pipe.joblib"), "--data", str(tmp_path / "train.csv"),
                   "--target", "target", "--name", "bc", "--version", "0.1.0", "--out", str(tmp_path / "out"),
                   "--archive"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "onnx parity on 569 training rows: label agreement 1.0000" in out
    assert (tmp_path / "out.tar.gz").is_file()
    sha = sha256_file(tmp_path / "out" / MANIFEST)
    assert cli.main(["bundle", "verify", str(tmp_path / "out"), "--expected-sha256", sha, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"ok": True, "name": "bc", "version": "0.1.0", "format": "onnx", "manifest_sha256": sha,
                       "files": 5, "features": 30}  # fmt: skip
    assert cli.main(["bundle", "verify", str(tmp_path / "out.tar.gz")]) == 0
    assert cli.main(["bundle", "verify", str(tmp_path / "out"), "--expected-sha256", "ab" * 32]) == 1
    assert "bundle verify FAILED" in capsys.readouterr().err


def test_cli_build_from_npz_and_refusal_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    X, y, names = demo_data()
    np.savez(tmp_path / "train.npz", X=X, y=y, feature_names=np.array(names))
    joblib.dump(demo_pipeline("good", "hgb"), tmp_path / "hgb.joblib")
    args = ["bundle", "build", "--pipeline", str(tmp_path / "hgb.joblib"), "--data", str(tmp_path / "train.npz"),
            "--name", "hgb", "--version", "1.0.0"]  # fmt: skip
    assert (
        cli.main([*args, "--out", str(tmp_path / "a"), "--onnx", "require", "--score-tolerance", "1e-12"])
        == 1
    )
    assert "disagrees" in capsys.readouterr().err
    assert cli.main([*args, "--out", str(tmp_path / "b"), "--onnx", "off"]) == 0
    assert json.loads((tmp_path / "b" / MANIFEST).read_text())["format"] == "joblib"
    assert json.loads((tmp_path / "b" / "schema.json").read_text())["features"][0]["name"] == "mean radius"
