"""`mlcanary local|demo|bundle` reach their packages through entry points and name a missing extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mlcanary import cli


def _run_cli(
    argv: list[str], *, block_modules: tuple[str, ...] = (), hide: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter where ``block_modules`` cannot be imported and the distributions
    ``hide`` are not installed (as after ``pip install mlcanary`` without the extra)."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, importlib.metadata, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {block_modules!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, Block())
        real = importlib.metadata.distribution

        def distribution(name):
            if name.lower() in {tuple(h.lower() for h in hide)!r}:
                raise importlib.metadata.PackageNotFoundError(name)
            return real(name)

        importlib.metadata.distribution = distribution
        from mlcanary.cli import main
        sys.exit(main({argv!r}))
        """
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("argv", "blocked", "hint"),
    [
        (["local", "status"], ("mlcanary_local",), "pip install 'mlcanary[local]'"),
        (["demo", "--quick"], ("mlcanary_local",), "pip install 'mlcanary[local]'"),
        (["bundle", "verify", "x"], ("mlcanary_serving",), "pip install 'mlcanary[serving,bundle]'"),
    ],
)
def test_a_missing_package_names_the_extra(argv: list[str], blocked: tuple[str, ...], hint: str) -> None:
    result = _run_cli(argv, block_modules=blocked)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert hint in result.stderr
    assert blocked[0] in result.stderr  # what is missing, not only what to do


def test_a_missing_dependency_of_the_extra_is_named_before_anything_runs() -> None:
    result = _run_cli(["demo", "--quick"], hide=("matplotlib", "jsonschema"))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "missing: jsonschema, matplotlib" in result.stderr
    assert "pip install 'mlcanary[local]'" in result.stderr
    assert "training" not in result.stdout  # the demo did not start


def test_with_the_extra_installed_the_entry_point_runs_the_command() -> None:
    result = _run_cli(["local", "status", "--work-dir", "/nonexistent/mlcanary-local"])
    assert "needs the" not in result.stderr
    assert result.returncode == 1, result.stderr
    assert "no local stack is running" in result.stdout


def test_the_extras_are_read_from_the_distribution_metadata() -> None:
    # `local` includes the emulator, serving and bundle extras through self-references.
    needed = cli._extra_requirements("local")
    assert {"matplotlib", "jsonschema", "fastapi", "skl2onnx"} <= needed
    assert "mlcanary" not in needed
    assert cli.missing_distributions(("local",)) == []


def test_the_operator_package_does_not_import_the_extra_packages() -> None:
    script = (
        "import sys, mlcanary.cli\n"
        "from mlcanary.cli import build_parser\n"
        "build_parser()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('mlcanary_local', 'mlcanary_serving', 'kube_emulator')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr
