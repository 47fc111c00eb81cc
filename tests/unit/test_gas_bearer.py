"""Which side of an on-chain transfer carries its transaction's gas: the gas is charged to the
customer and posted from custody once per transaction our wallet sent, never for one it did not."""

from __future__ import annotations

from connectors.chain import _bears_gas

OURS, THEIRS = "0x" + "a" * 40, "0x" + "b" * 40


def side(tx: str, direction: str, sender: str) -> dict:
    return {"tx_hash": tx, "direction": direction, "from_address": sender}


def test_a_transaction_that_moves_several_amounts_out_bears_its_gas_once():
    borne: set[str] = set()
    receipt = {"from": OURS.upper().replace("0X", "0x")}
    sides = [side("0x1", "OUTBOUND", OURS), side("0x1", "OUTBOUND", OURS), side("0x1", "OUTBOUND", OURS)]
    assert [_bears_gas(s, receipt, borne) for s in sides] == [True, False, False]
    assert _bears_gas(side("0x2", "OUTBOUND", OURS), {"from": OURS}, borne), (
        "another transaction, its own gas"
    )


def test_a_transfer_out_in_someone_elses_transaction_bears_none():
    assert not _bears_gas(side("0x3", "OUTBOUND", OURS), {"from": THEIRS}, set())


def test_an_inbound_side_keeps_the_senders_gas_for_the_record():
    borne: set[str] = set()
    assert _bears_gas(side("0x4", "INBOUND", THEIRS), {"from": THEIRS}, borne)
    assert borne == set(), "an inbound side takes no outbound side's place"
