"""dashc.runtime: the garbling engine (labels, hashing, gates, gadgets, backends)."""
