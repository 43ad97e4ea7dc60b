"""Evolutionary architecture search: a space of per-stage choices, aging evolution or NSGA-II, and the
trainer as the proxy (`effnetx-search`)."""
