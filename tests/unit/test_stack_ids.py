"""The local stack's own identifiers."""

from __future__ import annotations


def test_a_cluster_id_never_reads_as_an_option() -> None:
    from ops.stack.services import _cluster_id

    ids = [_cluster_id() for _ in range(2000)]
    assert not any(i.startswith("-") for i in ids)
    assert len(set(ids)) == 2000 and all(len(i) == 22 for i in ids)
