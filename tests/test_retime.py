"""Latency measured after training (measure/retime.py) and read by the report (report/frame.py, with_latency)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunelab.errors import UserError
from prunelab.measure.retime import default_out, main, retime, timed_runs
from prunelab.record import read_results
from prunelab.report.frame import load_latency, load_results, with_latency
from prunelab.report.tables import measured_speedup


@pytest.fixture
def two_runs(tiny_cfg, tmp_path: Path) -> Path:
    """Two tiny untimed runs (measure.latency=false), CST and L1; their results CSV."""
    from prunelab import pipeline

    methods = (("method=cst", "method.min_templates=1"), ("method=l1",))  # CST: its compacted form is rebuilt
    for i, method in enumerate(methods):
        pipeline.run(tiny_cfg(*method, f"seed={i}"), tmp_path / f"run{i}")
    return tmp_path / "runs.csv"


def test_retime_times_each_saved_run_once_and_the_report_reads_it(two_runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "latency" / "runs.csv"
    first = retime(two_runs, out)
    rows = read_results(two_runs)
    assert sorted(first["timed"]) == sorted(r["run_dir"] for r in rows) and not first["missing"]
    assert retime(two_runs, out)["timed"] == []  # resumes: a run already timed is skipped
    assert set(timed_runs(out)) == {r["run_dir"] for r in rows} and len(out.read_text().splitlines()) == 3

    runs = load_results([two_runs])
    assert runs["extra"].map(measured_speedup).isna().all()  # the runs timed nothing themselves
    timings = load_latency([out])
    filled = with_latency(runs, timings)
    speedups = filled["extra"].map(measured_speedup)
    assert speedups.notna().all() and (speedups > 0).all()
    latency = json.loads(filled["extra"][0])["latency"]
    assert set(latency) >= {"batch_1", "batch_64", "fold_bn", "timed_on"}
    assert latency["batch_64"]["speedup"] == pytest.approx(latency["batch_64"]["dense_ms"] / latency["batch_64"]["ms"])


def test_a_run_that_timed_itself_keeps_its_own_latency(tiny_cfg, tmp_path: Path) -> None:
    from prunelab import pipeline

    cfg = tiny_cfg("method=l1", "measure.latency={batch:[1],min_run_time:0.01}")
    pipeline.run(cfg, tmp_path / "run")
    runs = load_results([tmp_path / "runs.csv"])
    own = json.loads(runs["extra"][0])["latency"]
    other = {"batch_1": {"ms": 1.0, "dense_ms": 9.0, "speedup": 9.0}, "timed_on": "elsewhere"}
    assert json.loads(with_latency(runs, {runs["run_dir"][0]: other})["extra"][0])["latency"] == own


def test_a_gone_run_folder_is_named_and_left_untimed(two_runs: Path, tmp_path: Path, capsys) -> None:
    gone = read_results(two_runs)[0]["run_dir"]
    (Path(gone) / "model.pt").unlink()
    result = retime(two_runs, tmp_path / "latency.csv")
    assert result["missing"] == [gone] and len(result["timed"]) == 1
    assert f"{gone}/model.pt is gone" in capsys.readouterr().err


def test_retime_cli_refuses_a_missing_csv_in_one_line(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "nope.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.csv: no such results CSV" in err
    assert default_out(Path("results/runs/compare.csv")) == Path("results/latency/compare.csv")


def test_a_bad_latency_row_is_named_by_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "latency.csv"
    bad.write_text("run_dir,latency,device,git_sha,command,timestamp\nout/a,{\"x\": 1},cpu,abc,python x,t\n")
    with pytest.raises(UserError, match=r"latency.csv:2: column 'latency': expected a JSON object with batch_"):
        load_latency([bad])


def test_a_pass_with_another_thread_count_is_refused(two_runs: Path, tmp_path: Path, monkeypatch) -> None:
    import torch

    out = tmp_path / "latency.csv"
    retime(two_runs, out)
    before = out.read_text()
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 1)
    with pytest.raises(UserError, match=rf"timed with {threads} CPU thread\(s\), this pass would use {threads + 1}: "
                                        rf"set OMP_NUM_THREADS={threads}"):
        retime(two_runs, out)
    assert out.read_text() == before
