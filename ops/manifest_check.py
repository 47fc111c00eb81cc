"""Validating `deploy/kubernetes/` against the schemas a cluster would apply.

Core kinds (Deployment, Service, ConfigMap) against Kubernetes' own OpenAPI schemas,
bundled by `kubernetes-validate` (PyPI), strictly: an unknown field is an error. KEDA's
kinds against the CustomResourceDefinitions KEDA ships, taken from its Go module
(`go mod download` from the Go module proxy, cached under `.cache/go`), their OpenAPI v3
schemas checked with `jsonschema`, unknown fields refused as well.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from topics.errors import LedgerstreamError

KUBERNETES_VERSION = "1.30.0"
KEDA_MODULE = "github.com/kedacore/keda/v2@v2.16.1"
COMPOSE_MODULE = "github.com/compose-spec/compose-go/v2@v2.4.4"
"""The compose specification's JSON schema, as docker compose itself loads it."""
COMPOSE_MODULE = "github.com/compose-spec/compose-go/v2@v2.4.4"
"""The compose specification's JSON schema, as docker compose itself loads it."""
KEDA_CRDS = {
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
}


def go_module(module: str, cache: Path) -> Path:
    """The folder of a Go module, downloaded from the Go module proxy into `cache` once."""
    go = shutil.which("go")
    if go is None:
        raise LedgerstreamError(f"deploy check: `go` is needed to fetch {module} from the Go module proxy")
    env = {
        **os.environ,
        "GOMODCACHE": str(cache / "go" / "mod"),
        "GOPATH": str(cache / "go"),
        "GOFLAGS": "-mod=mod",
    }
    done = subprocess.run(
        [go, "mod", "download", "-json", module], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise LedgerstreamError(
            f"deploy check: go mod download {module}: {(done.stderr or done.stdout).strip()}"
        )
    return Path(json.loads(done.stdout)["Dir"])


def check_compose(files: list[Path], cache: Path) -> list[str]:
    """Problems of docker-compose files against the compose specification's schema."""
    import jsonschema

    schema = json.loads((go_module(COMPOSE_MODULE, cache) / "schema" / "compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    problems = []
    for path in files:
        for error in validator.iter_errors(yaml.safe_load(path.read_text())):
            where = "/".join(map(str, error.absolute_path)) or "(top)"
            problems.append(f"{path.name}: {where}: {error.message}")
    return problems


def keda_schemas(cache: Path) -> dict[str, dict[str, Any]]:
    """KEDA's kinds -> the OpenAPI v3 schema of their v1alpha1 version."""
    folder = go_module(KEDA_MODULE, cache) / "config" / "crd" / "bases"
    schemas = {}
    for kind, name in KEDA_CRDS.items():
        crd = yaml.safe_load((folder / name).read_text())
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
        schemas[kind] = _closed(version["schema"]["openAPIV3Schema"])
    return schemas


def _closed(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists its properties (as
    kubectl's strict field validation does), except where it keeps unknown fields."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        keeps_unknown = out.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in out and "additionalProperties" not in out and not keeps_unknown:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def documents(folder: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def check_manifests(folder: Path, cache: Path) -> tuple[int, list[str]]:
    """(documents checked, problems) for every manifest under `folder`."""
    import jsonschema
    import kubernetes_validate

    keda: dict[str, dict[str, Any]] | None = None
    problems: list[str] = []
    count = 0
    for path, doc in documents(folder):
        count += 1
        where = f"{path.name}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        if str(doc.get("apiVersion", "")).startswith("keda.sh/"):
            keda = keda if keda is not None else keda_schemas(cache)
            schema = keda.get(doc["kind"])
            if schema is None:
                problems.append(f"{where}: no schema for KEDA kind {doc['kind']}")
                continue
            for error in jsonschema.Draft7Validator(schema).iter_errors(doc):
                problems.append(f"{where}: {'/'.join(map(str, error.absolute_path))}: {error.message}")
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{where}: {'/'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{where}: no Kubernetes {KUBERNETES_VERSION} schema for {doc.get('apiVersion')}")
    return count, problems
