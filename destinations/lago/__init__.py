"""The Lago destination plugin for actionmap."""
