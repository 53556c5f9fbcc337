"""Durable state: journal records, snapshots and recovery (issue 5)."""
