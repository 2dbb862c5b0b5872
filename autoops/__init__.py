"""Auto-Ops command line: the self-healing loop (check, propose, report), backtests and helpers."""
