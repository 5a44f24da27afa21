"""The Stripe destination plugin for actionmap."""
