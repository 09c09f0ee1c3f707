"""The shared realtime connection, poke intake and the pull engine (headless, no Qt)."""
