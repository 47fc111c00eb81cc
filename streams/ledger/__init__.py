"""Ledger posting: completed transactions, fees and conversions become balanced journal entries."""
