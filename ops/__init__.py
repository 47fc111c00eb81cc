"""What operators, analysts and CI run: the `ledgerstream` command. Sits on top: may import
every other package."""
