#!/usr/bin/env python
"""Copy a pipeline run's summary (written by `rlphf pipeline`) into README.md's results section.

python scripts/readme_results.py runs/demo
"""

import re
import sys
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"


def main() -> None:
    run_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")
    summary = run_dir / "summary.md"
    if not summary.is_file():
        sys.exit(f"error: no {summary}: run `make demo` (or `rlphf pipeline run_dir={run_dir}`) first")
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        sys.exit(f"error: README.md has no {START} ... {END} section")
    # the summary's headings sit two levels under the README's results section
    body = re.sub(
        r"^(#+) ", lambda m: "#" * min(6, len(m.group(1)) + 2) + " ", summary.read_text().strip(), flags=re.M
    )
    body = body.replace("rlphf pipeline:", "Run", 1)
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(f"{head}{START}\n{body}\n{END}{tail}")
    tmp.replace(readme)
    print(f"README.md results updated from {summary}")


if __name__ == "__main__":
    main()
