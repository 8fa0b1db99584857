"""`rlphf personalize`: a user's weights over the preference dimensions from a few pairwise answers (PReF)."""
