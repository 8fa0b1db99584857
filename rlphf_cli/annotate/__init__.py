"""Human judgments in the browser: `rlphf annotate` (a study page over a run's generations) and its answers."""
