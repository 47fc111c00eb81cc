"""Fees: five tiers on every chargeable event, from versioned, effective-dated schedules."""
