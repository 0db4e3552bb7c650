#!/usr/bin/env bash
# A real MLflow tracking server (the Model Registry the operator polls, tests/registry, the local
# stack and the demo's closed loop) in its OWN virtualenv at $1 (default .venv/tools/mlflow): mlflow
# pins numpy, pandas, flask and more, so it is no dependency of any mlcanary package; ours talk to it
# over REST only. Idempotent. `make setup` runs it beside the project's own pip install (independent
# work, about two minutes on a fresh machine).
set -euo pipefail
mlflow_venv="${1:-.venv/tools/mlflow}"
# [auth]: Flask-WTF, which MLflow's basic-auth app (--app-name basic-auth) needs; the tests use it.
if ! "$mlflow_venv/bin/python" -c "import mlflow, flask_wtf" 2>/dev/null; then
  python3 -m venv "$mlflow_venv"
  "$mlflow_venv/bin/python" -m pip install -q 'mlflow[auth]>=3.1,<4'
fi
