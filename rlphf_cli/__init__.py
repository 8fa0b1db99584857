"""rlphf-cli: experts per preference pole, Personalized Soups, and the Preference Control Model."""

__version__ = "0.1.0"
