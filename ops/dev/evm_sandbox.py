"""An in-process EVM (eth-tester with the py-evm backend) with the test ERC-20 deployed,
for the chain listener's tests and the demo. Not used against a real chain."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from web3 import Web3
from web3.types import Wei


@dataclass
class Sandbox:
    tester: Any
    w3: Web3
    token: Any
    """The deployed TestToken contract."""

    @property
    def accounts(self) -> list[str]:
        return list(self.w3.eth.accounts)

    def send_native(self, sender: str, receiver: str, wei: int) -> str:
        tx = self.w3.eth.send_transaction({"from": sender, "to": receiver, "value": Wei(wei)})
        return Web3.to_hex(self.w3.eth.wait_for_transaction_receipt(tx)["transactionHash"])

    def send_token(self, sender: str, receiver: str, units: int) -> str:
        tx = self.token.functions.transfer(receiver, units).transact({"from": sender})
        return Web3.to_hex(self.w3.eth.wait_for_transaction_receipt(tx)["transactionHash"])


def start_sandbox(symbol: str = "TUSD", decimals: int = 6, supply: int = 10**18) -> Sandbox:
    """A fresh chain whose first account holds `supply` base units of a new ERC-20."""
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import EthereumTesterProvider

    tester = EthereumTester(PyEVMBackend())
    w3 = Web3(EthereumTesterProvider(tester))
    artifact = json.loads(resources.files("connectors").joinpath("contracts/TestToken.json").read_text())
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    deployer = w3.eth.accounts[0]
    tx = factory.constructor(f"Test {symbol}", symbol, decimals, supply).transact({"from": deployer})
    address = w3.eth.wait_for_transaction_receipt(tx)["contractAddress"]
    return Sandbox(tester, w3, w3.eth.contract(address=address, abi=artifact["abi"]))
