"""The P-Soups profile end to end at toy budgets stays within a memory cap (the PCM ablation included).

The pipeline runs in a subprocess (tests/psoups_profile.py) under an address-space limit that protects the
machine, while a watchdog samples its resident memory and kills it above the cap: a stage whose memory grows
with anything but its batch and length settings fails here instead of starving the machine.
"""

import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from psoups_profile import FAST

HERE = Path(__file__).parent
CAP_MB = (
    1500  # the whole pipeline on a ~50k-parameter LLaMA peaks near 0.9 GB here (torch, transformers, trl)
)
ADDRESS_SPACE_GB = 10


def run_capped(args: list[str], cap_mb: float, timeout: float = 900) -> tuple[int, float, str]:
    """Run `python args...` with a watchdog on its resident memory; (exit code, peak MB, output tail)."""
    import psutil

    def limit():
        size = ADDRESS_SPACE_GB << 30
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=limit,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)},
    )
    watched = psutil.Process(proc.pid)
    peak, start = 0.0, time.monotonic()
    chunks = []
    reader = threading.Thread(target=lambda: chunks.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            rss = sum(p.memory_info().rss for p in (watched, *watched.children(recursive=True)))
        except psutil.NoSuchProcess:
            break
        peak = max(peak, rss / 2**20)
        if peak > cap_mb or time.monotonic() - start > timeout:
            proc.kill()
            break
        time.sleep(0.05)
    proc.wait()
    reader.join(timeout=5)
    return proc.returncode, peak, "".join(chunks)[-3000:]


@pytest.mark.slow
def test_psoups_profile_at_toy_budgets_stays_under_a_memory_cap(tmp_path):
    code, peak, out = run_capped([str(HERE / "psoups_profile.py"), "llama", str(tmp_path), *FAST], CAP_MB)
    assert code == 0, f"exit {code}, peak {peak:.0f} MB (cap {CAP_MB}):\n{out}"
    assert peak < CAP_MB
    run = tmp_path / "run"
    assert (run / "ablations" / "pcm-rloo" / "manifest.json").is_file()  # the ablation ran too
    assert (run / "summary.md").is_file()
    # which layers the default LoRA adapted is in each manifest: every linear layer of LLaMA's blocks
    for artifact in ("rm/P1A", "experts/P2B", "arms/P3A"):
        manifest = json.loads((run / artifact / "manifest.json").read_text())
        assert manifest["lora_target_modules"] == [
            "down_proj",
            "gate_proj",
            "k_proj",
            "o_proj",
            "q_proj",
            "up_proj",
            "v_proj",
        ], artifact


def test_the_watchdog_stops_a_process_that_outgrows_the_cap():
    grow = (
        "import time\nx = []\nfor _ in range(40):\n    x.append(bytearray(50 << 20))\n    time.sleep(0.05)\n"
    )
    code, peak, _ = run_capped(["-c", grow], cap_mb=300, timeout=60)
    assert code != 0 and 300 < peak < 1000
    code, peak, _ = run_capped(["-c", "x = bytearray(100 << 20)"], cap_mb=300, timeout=60)
    assert code == 0 and peak < 300
