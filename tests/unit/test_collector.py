"""A settled collector leaves startup objects alone and still frees cyclic garbage."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from topics.settings import REPO_ROOT

PROBE = textwrap.dedent(
    """
    import gc, weakref
    from topics.collector import FULL_COLLECTION_AFTER, settle_collector

    class Node:
        pass

    before = gc.get_threshold()
    settle_collector()
    after = gc.get_threshold()
    assert gc.get_freeze_count() > 0, "startup objects are frozen"
    assert after == (before[0], before[1], FULL_COLLECTION_AFTER), after

    freed = []
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle only the cyclic collector can free
    weakref.finalize(a, freed.append, "a")
    del a, b
    kept = [[] for _ in range(3 * after[0])]  # enough new containers for the youngest generation to run
    assert freed == ["a"], "a young cycle is collected without a full collection"
    assert len(kept) == 3 * after[0]
    print("ok")
    """
)


def test_a_settled_collector_still_frees_young_cycles() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
