"""The installed package runs without the developer tooling (`ops.dev`) and without the tests."""

from __future__ import annotations

import subprocess
import sys

from topics.settings import REPO_ROOT

SCRIPT = """
import importlib, pkgutil, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name in ("ops.dev", "tests") or name.startswith(("ops.dev.", "tests.")):
            raise ImportError(f"{name} is not part of the installed package")

sys.meta_path.insert(0, Refuse())
imported = 0
for root in ("topics", "streams", "sinks", "connectors", "ops"):
    package = importlib.import_module(root)
    for found in pkgutil.walk_packages(package.__path__, root + ".", onerror=lambda name: None):
        if found.name == "ops.dev" or found.name.startswith("ops.dev."):
            continue
        importlib.import_module(found.name)
        imported += 1
from ops.cli import build_parser
build_parser().parse_args(["agent", "fees"])
print(imported)
"""


def test_every_runtime_module_and_the_cli_import_without_dev_tooling_or_tests():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) > 80


def test_the_wheel_leaves_the_developer_tooling_out():
    import tomllib

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]
    from setuptools import find_packages

    packages = find_packages(str(REPO_ROOT), include=config["include"], exclude=config["exclude"])
    assert "ops" in packages and "ops.stack" in packages
    assert not [p for p in packages if p.startswith(("ops.dev", "tests"))]


def test_every_exception_the_project_defines_is_in_one_tree():
    import importlib
    import inspect
    import pkgutil

    from topics.errors import LedgerstreamError

    outside = []
    for root in ("topics", "streams", "sinks", "connectors", "ops"):
        package = importlib.import_module(root)
        for found in pkgutil.walk_packages(package.__path__, root + "."):
            module = importlib.import_module(found.name)
            for name, value in vars(module).items():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and value.__module__ == module.__name__
                    and not issubclass(value, LedgerstreamError)
                ):
                    outside.append(f"{module.__name__}.{name}")
    assert outside == [], "derive from topics.errors.LedgerstreamError"


def test_a_fault_point_is_inert_unless_armed_and_a_bad_arming_is_refused():
    def run(fault: str | None, code: str, until: str | None = None) -> subprocess.CompletedProcess[str]:
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERSTREAM_FAULT")}
        if fault is not None:
            env["LEDGERSTREAM_FAULT"] = fault
        if until is not None:
            env["LEDGERSTREAM_FAULT_UNTIL"] = until
        return subprocess.run(
            [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
        )

    passes = (
        "from topics.faults import fault_point\nfor _ in range(3): fault_point('after_work')\nprint('ok')"
    )
    assert run(None, passes).stdout.strip() == "ok"
    assert run("before_flush@1", passes).stdout.strip() == "ok"  # another point: inert
    crashed = run("after_work@2", passes)
    assert crashed.returncode == 137 and "after_work #2 reached" in crashed.stderr and not crashed.stdout
    refused = run("after_lunch@1", "import topics.faults")
    assert refused.returncode != 0 and "use <point>@<n>" in refused.stderr
    import time

    assert run("after_work@2", passes, until=str(time.time() - 1)).stdout.strip() == "ok"  # disarmed
    assert run("after_work@2", passes, until=str(time.time() + 3600)).returncode == 137
    assert "use unix seconds" in run("after_work@2", passes, until="soon").stderr
