from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.services import containers, docker_available, reachable
from topics.catalog import Catalog, load_catalog
from topics.schemas import SchemaStore, load_store
from topics.settings import REPO_ROOT, Settings

UNIT, INTEGRATION = Path(__file__).parent / "unit", Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if UNIT in path.parents:
            item.add_marker(pytest.mark.unit)
        elif INTEGRATION in path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def store() -> SchemaStore:
    return load_store(REPO_ROOT / "avro")


@pytest.fixture
def avro_copy(tmp_path: Path) -> Path:
    """A private copy of avro/ that a test may edit."""
    target = tmp_path / "avro"
    shutil.copytree(REPO_ROOT / "avro", target)
    return target


@pytest.fixture(scope="session")
def services() -> Iterator[Settings]:
    """Real Kafka, PostgreSQL and Redis (see tests/fixtures/services.py)."""
    if docker_available():
        with containers() as settings:
            yield settings
        return
    settings = Settings()
    problem = reachable(settings)
    if problem:
        pytest.fail(
            f"no Docker engine and the local stack does not answer ({problem}); run `ledgerstream stack up`"
        )
    yield settings
