"""The long-running modes of actionmap: what they share (observability) and each mode's own package."""
