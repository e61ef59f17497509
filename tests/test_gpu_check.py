"""experiments/gpu_check.py, rehearsed on the CPU with --tiny: every part runs and its files hold their fields."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

METHODS = sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))


def test_the_cpu_rehearsal_writes_every_part_with_its_provenance(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "experiments/gpu_check.py", "--device", "cpu", "--tiny", "--threads", "1",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = json.loads((tmp_path / "gpu.json").read_text())
    assert record["tiny"] is True and record["device"].startswith("cpu") and record["torch"]
    assert record["git_sha"] and record["command"].startswith("python experiments/gpu_check.py")
    parts = record["parts"]
    assert parts["tests"]["passed"] == 1 and parts["tests"]["failed"] == parts["tests"]["errors"] == 0
    assert "PRUNELAB_GPU_TEST_DEVICE=cpu" in parts["tests"]["command"]
    loops = parts["throughput"]["loops"]
    assert loops["ours"]["images_per_s"] > 0 and loops["dataloader_pil"]["s_per_epoch"] > 0
    assert "not_run" in loops["ours_compiled"]  # no torch.compile in a CPU rehearsal
    assert parts["scoring"]["max_rel_diff"] < 1e-4 and parts["scoring"]["per_map_ms_per_image"] > 0
    rows = parts["latency"]["rows"]
    assert len(rows) == len(METHODS) and all(r["ms"] > 0 and r["dense_ms"] > 0 for r in rows)
    assert all(part["seconds"] > 0 for part in parts.values())
    text = (tmp_path / "gpu.md").read_text()
    assert "Command: `python experiments/gpu_check.py" in text and "Git: " in text and "| svd(l1) |" in text
