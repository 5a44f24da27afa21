"""The Orb destination plugin for actionmap."""
