// SPDX-License-Identifier: MIT
// An OpenZeppelin ERC-20 with settable decimals, deployed on the in-process EVM by the
// chain listener's tests and the demo. Compiled by `make contracts` (solc from npm).
pragma solidity ^0.8.20;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

contract TestToken is ERC20 {
    uint8 private immutable _decimals;

    constructor(string memory name_, string memory symbol_, uint8 decimals_, uint256 supply) ERC20(name_, symbol_) {
        _decimals = decimals_;
        _mint(msg.sender, supply);
    }

    function decimals() public view override returns (uint8) {
        return _decimals;
    }
}
