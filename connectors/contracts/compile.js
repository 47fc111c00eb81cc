// Compiles TestToken.sol with solc-js and OpenZeppelin from npm into TestToken.json (abi + bytecode).
const fs = require("fs");
const path = require("path");
const solc = require("solc");
const here = __dirname;
const input = {
  language: "Solidity",
  sources: { "TestToken.sol": { content: fs.readFileSync(path.join(here, "TestToken.sol"), "utf8") } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "shanghai",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
function findImports(p) {
  const file = require.resolve(p, { paths: [process.cwd()] });
  return { contents: fs.readFileSync(file, "utf8") };
}
const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (out.errors || []).filter((e) => e.severity === "error");
if (errors.length) { console.error(errors.map((e) => e.formattedMessage).join("\n")); process.exit(1); }
const c = out.contracts["TestToken.sol"].TestToken;
const artifact = { contractName: "TestToken", compiler: "solc " + solc.version(), abi: c.abi, bytecode: "0x" + c.evm.bytecode.object };
fs.writeFileSync(path.join(here, "TestToken.json"), JSON.stringify(artifact, null, 1) + "\n");
console.log("wrote TestToken.json with", artifact.compiler);
