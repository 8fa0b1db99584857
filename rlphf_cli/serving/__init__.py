"""`rlphf serve`: an OpenAI-compatible HTTP server over a run directory's decoding methods."""
