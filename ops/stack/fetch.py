"""Jars from Maven Central, resolved with the machine's Maven into `.cache/`."""

from __future__ import annotations

import shutil
import subprocess
import time
import zipfile
from pathlib import Path

from topics.errors import StackError

KAFKA_VERSION = "3.9.2"
REGISTRY_VERSION = "2.6.13.Final"
POM = Path(__file__).with_name("kafka-pom.xml")
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"


def _mvn(cache: Path, *goals: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (mvn) is not installed: it fetches Kafka's jars (apt-get install maven)")
    if shutil.which("java") is None:
        raise StackError(
            "Java is not installed: Kafka needs a JRE 17 (apt-get install openjdk-17-jre-headless)"
        )
    argv = [mvn, "-B", "-q", "-f", str(POM), f"-Dmaven.repo.local={cache / 'm2'}", *goals]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise StackError(f"Maven could not fetch from Maven Central:\n{tail}")


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def kafka_libs(cache: Path) -> Path:
    """Folder of Kafka's jars (fetched on first use)."""
    return cache / f"kafka-{KAFKA_VERSION}" / "libs"


def fetch_kafka(cache: Path) -> str | None:
    """Fetch Kafka's broker jars unless present; a line saying what was fetched, or None."""
    libs = kafka_libs(cache)
    if (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        return None
    started = time.monotonic()
    partial = libs.with_name("libs.partial")
    shutil.rmtree(partial, ignore_errors=True)
    _mvn(
        cache,
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={partial}",
        "-DincludeScope=runtime",
    )
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    jars = len(list(libs.glob("*.jar")))
    return f"Kafka {KAFKA_VERSION}: {jars} jars, {_size_mb(libs):.1f} MB in {time.monotonic() - started:.1f}s"


def registry_jar(cache: Path) -> Path:
    return (
        cache
        / f"apicurio-registry-{REGISTRY_VERSION}"
        / f"apicurio-registry-app-{REGISTRY_VERSION}-runner.jar"
    )


def fetch_registry(cache: Path) -> str | None:
    """Fetch Apicurio Registry (its Quarkus distribution zip) unless present."""
    jar = registry_jar(cache)
    if jar.exists():
        return None
    started = time.monotonic()
    download = cache / "downloads"
    _mvn(
        cache,
        f"{DEPENDENCY_PLUGIN}:copy",
        f"-Dartifact=io.apicurio:apicurio-registry-app:{REGISTRY_VERSION}:zip:all",
        f"-DoutputDirectory={download}",
    )
    archive = download / f"apicurio-registry-app-{REGISTRY_VERSION}-all.zip"
    size = archive.stat().st_size / 1e6
    target = jar.parent
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    archive.unlink()
    return f"Apicurio Registry {REGISTRY_VERSION}: {size:.1f} MB in {time.monotonic() - started:.1f}s"
