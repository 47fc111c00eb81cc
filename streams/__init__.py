"""Stateless Faust agents: topic to topic."""
