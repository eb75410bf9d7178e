"""Analyzers: flow logs and snapshots against the kernel's algorithms; HTML reports."""
