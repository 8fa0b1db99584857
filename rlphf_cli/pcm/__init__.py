"""The Preference Control Model: a small causal transformer that weights the experts at every token."""
