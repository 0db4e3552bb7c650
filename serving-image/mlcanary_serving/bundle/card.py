"""Model card (build time): intended use, metrics overall and per subgroup, as JSON and Markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt


def describe(pipeline: Any) -> str:
    steps = getattr(pipeline, "steps", None)
    if steps:
        return "Pipeline(" + ", ".join(type(s).__name__ for _, s in steps) + ")"
    return type(pipeline).__name__


def jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def metrics(pipeline: Any, X: npt.NDArray[np.float64], y: npt.NDArray[Any], task: str) -> dict[str, float]:
    from sklearn import metrics as skm

    if task == "classification":
        pred = pipeline.predict(X)
        out = {"accuracy": float(skm.accuracy_score(y, pred)), "rows": float(len(y))}
        classes = list(getattr(pipeline, "classes_", []))
        if hasattr(pipeline, "predict_proba") and len(classes) == 2 and len(np.unique(y)) == 2:
            proba = pipeline.predict_proba(X)[:, 1]
            positive = y == classes[1]  # predict_proba's column 1, whatever the class values are
            out["roc_auc"] = float(skm.roc_auc_score(positive, proba))
            out["log_loss"] = float(
                skm.log_loss(positive, np.clip(proba, 1e-15, 1 - 1e-15), labels=[False, True])
            )
        return out
    pred = pipeline.predict(X)
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
        "mae": float(skm.mean_absolute_error(y, pred)),
        "r2": float(skm.r2_score(y, pred)),
        "rows": float(len(y)),
    }


def model_card(
    pipeline: Any,
    X: npt.NDArray[np.float64],
    y: npt.NDArray[Any],
    *,
    name: str,
    version: str,
    task: str,
    intended_use: str,
    limitations: str,
    eval_data: tuple[Any, Any] | None,
    subgroups: Mapping[str, Sequence[Any] | npt.NDArray[Any]] | None,
    onnx_parity: Mapping[str, Any] | None,
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "name": name,
        "version": version,
        "intended_use": intended_use,
        "limitations": limitations,
        "model": describe(pipeline),
        "task": task,
        "training_metrics": metrics(pipeline, X, y, task),
    }
    if eval_data is not None:
        Xe, ye = np.asarray(eval_data[0], dtype=np.float64), np.asarray(eval_data[1])
        card["evaluation_metrics"] = metrics(pipeline, Xe, ye, task)
    if subgroups:
        card["subgroups"] = {}
        for group, labels in subgroups.items():
            lab = np.asarray(labels)
            if len(lab) != len(X):
                raise ValueError(f"subgroup {group!r} needs one value per training row")
            card["subgroups"][group] = {
                str(jsonable(v)): metrics(pipeline, X[lab == v], y[lab == v], task) for v in np.unique(lab)
            }
    if onnx_parity is not None:
        card["onnx_parity"] = dict(onnx_parity)
    return card


def model_card_markdown(card: Mapping[str, Any]) -> str:
    lines = [
        f"# Model card: {card['name']} {card['version']}",
        "",
        "## Intended use",
        "",
        card["intended_use"],
    ]
    if card.get("limitations"):
        lines += ["", "## Limitations", "", str(card["limitations"])]
    for title, key in (
        ("Training metrics", "training_metrics"),
        ("Evaluation metrics", "evaluation_metrics"),
    ):
        if card.get(key):
            lines += ["", f"## {title}", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4g} |" for k, v in card[key].items()]
    for group, values in (card.get("subgroups") or {}).items():
        lines += ["", f"## Performance by `{group}`", ""]
        metric_names = sorted({m for v in values.values() for m in v})
        lines += ["| value | " + " | ".join(metric_names) + " |", "|---" * (len(metric_names) + 1) + "|"]
        for gv, ms in values.items():
            lines.append(
                f"| {gv} | " + " | ".join(f"{ms.get(m, float('nan')):.4g}" for m in metric_names) + " |"
            )
    return "\n".join(lines) + "\n"
