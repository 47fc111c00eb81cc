"""What operators, analysts and CI run: the `ledgerstream` command."""
