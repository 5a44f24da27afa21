"""``actionmap serve``: the intake, the durable queue with one lane per connection, and the workers that deliver from it."""
