"""HTTP API of the processor: one router per concern."""
