"""``fairrl compare``: training strategies side by side at an equal budget (plan, run, report)."""
