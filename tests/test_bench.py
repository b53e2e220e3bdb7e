"""`fashion bench` end to end on a tiny catalog: every figure present and plausible.

This proves the benchmark's code path against the real services; the figures
themselves are taken with `scripts/bench` and quoted in the README.
"""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from catalog.codes import JOB_STAGES
from worker.cli import main

pytestmark = pytest.mark.bench


def test_bench_prints_and_writes_every_figure(tmp_path, redis_url, s3_endpoint) -> None:
    out = tmp_path / "results.json"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "--json",
            "--images=200",
            "--naive-images=16",
            "--interactive=10",
            "--chunk=32",
            "--capacity-step=1",
            f"--redis-url={redis_url}",
            f"--out={out}",
        ],
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed == json.loads(out.read_text())
    for key in (
        "naive_images_per_s",
        "bulk_images_per_s",
        "bulk_first_time_images_per_s",
        "bulk_new_model_images_per_s",
        "inference_images_per_s",
    ):
        assert printed[key] > 0, key
    assert printed["bulk_images_per_s"] == printed["bulk_first_time_images_per_s"]
    # Nothing changed since the runs before it: the nightly run queues nothing.
    assert printed["nightly_unchanged_queued"] == 0
    assert printed["nightly_unchanged_s"] > 0
    # The speed-up is what a new model version costs: a candidate's fill from kept inputs.
    assert printed["bulk_speedup"] == pytest.approx(
        printed["bulk_new_model_images_per_s"] / printed["naive_images_per_s"], rel=0.02
    )  # both rates are printed rounded to 0.1
    for key in (
        "interactive_idle_ms",
        "interactive_under_load_ms",
        "interactive_during_fill_ms",
        "api_idle_ms",
        "api_direct_ms",
    ):
        figures = printed[key]
        assert 0 < figures["p50"] <= figures["p95"] <= figures["p99"], key
    # The rollout: the live version's indexes, a candidate's fill, its indexes and
    # promote (the promote is seen by an upload answered by the new version).
    for key in ("index_build_s", "candidate_index_build_s", "promote_visible_s"):
        assert printed[key] > 0, key
    assert printed["interactive_idle_ms"]["n"] == 10
    # The API's open-loop capacity: the steps up to the first past it, and no upload
    # it accepted was lost.
    steps = printed["api_capacity_steps"]
    assert steps and all(step["sent"] == round(step["rate_per_s"]) for step in steps)
    in_time = [
        step
        for step in steps
        if step["statuses"] == {"200": step["sent"]} and step["p99_ms"] <= 150
    ]
    assert printed["api_capacity_uploads_per_s"] == (in_time[-1]["rate_per_s"] if in_time else 0)
    assert printed["api_capacity_lost"] == 0
    assert printed["api_capacity_accepted"] >= sum(step["statuses"].get("200", 0) for step in steps)
    stages = printed["interactive_stages_ms"]
    assert set(stages) == {*JOB_STAGES, "sum_of_medians"}
    assert all(stages[stage] >= 0 for stage in JOB_STAGES) and stages["inference"] > 0
    assert printed["api_idle_ms"]["n"] == printed["api_direct_ms"]["n"] == 10
    assert printed["api_overhead_ms"] == pytest.approx(
        printed["api_idle_ms"]["p50"] - printed["api_direct_ms"]["p50"], abs=0.11
    )
    # What tracing costs: three workers side by side, the traced ones exporting.
    p50 = printed["tracing_interactive_p50_ms"]
    assert set(p50) == {"off", "sampled", "all"} and all(value > 0 for value in p50.values())
    assert set(printed["tracing_overhead_pct"]) == {"sampled", "all"}
    assert printed["tracing_overhead_pct"]["all"] == pytest.approx(
        100 * (p50["all"] / p50["off"] - 1), abs=0.06
    )
    assert printed["tracing_exported"]["requests"] > 0  # spans did reach the sink
    assert 0 < printed["inference_vs_engine"] <= 1.5
    # Every engine the shipped model has, each with its own version; float is the reference.
    engines = printed["engines"]
    assert set(engines) == {"model/float", "model/int8", "model/dynamic"}
    assert engines["model/float"]["vs_float"] == 1.0
    for engine in ("int8", "dynamic"):
        assert engines[f"model/{engine}"]["version"] == (
            engines["model/float"]["version"] + f"-{engine}"
        )
        assert engines[f"model/{engine}"]["images_per_s"] > 0
    peak = printed["worker_rss_mb"]["peak"]
    assert len(peak["naive"]) == len(peak["bulk"]) == 2 and len(peak["interactive"]) == 1
    samples = printed["worker_rss_mb"]["bulk_during_run"]
    assert samples[0]["done"] == 0 and samples[-1]["done"] == 200


def test_the_review_page_benchmark_answers_both_queues_on_a_small_catalog(capsys) -> None:
    from worker.tools import bench_review

    bench_review.main(["--products", "300", "--uploads", "300", "--answers", "5"])

    figures = json.loads(capsys.readouterr().out)
    assert figures["flagged_uploads"] == 30 and figures["mislisted_products"] == 30
    for queue in ("uploads", "audit"):
        timed = figures["queues"][queue]
        assert timed["answers"] == 5
        assert 0 < timed["answer"]["p50_ms"] <= timed["answer"]["p95_ms"]
        assert timed["items_per_minute_allowed"] > 0
    assert figures["floor_livez"]["p50_ms"] > 0


def test_bench_inference_times_each_engine_of_the_model_and_a_baseline(tmp_path) -> None:
    from click.testing import CliRunner

    from worker.cli import main
    from worker.pipeline.classifier import BUNDLED_MODEL

    baseline = tmp_path / "baseline"
    baseline.mkdir()
    for name in ("model.tflite", "model_card.json"):
        (baseline / name).write_bytes(BUNDLED_MODEL.with_name(name).read_bytes())
    result = CliRunner().invoke(
        main,
        [
            "bench-inference",
            "--baseline",
            str(baseline / "model.tflite"),
            "--rounds",
            "5",
            "--batch",
            "8",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    # The baseline's copied card lists the quantized files, which were not copied: float only.
    assert set(printed["engines"]) == {
        "model/float",
        "model/int8",
        "model/dynamic",
        "baseline/float",
    }
    assert all(figures["images_per_s"] > 0 for figures in printed["engines"].values())
    assert printed["batch"] == 8 and printed["rounds"] == 5


def test_a_benchmarks_reconfigured_postgresql_is_stopped_when_it_ends() -> None:
    """The benchmarks restart their PostgreSQL with a bigger ``shared_buffers``; pgserver
    only knew the postmaster it started, so each run left the restarted one running
    (on a deleted folder, with its shared memory) after it ended.

    Without the fix this fails only once the replaced postmaster has been reaped: while
    it is a zombie, pgserver takes it for running and stops the server itself. This
    machine's PID 1 reaps late, so here it failed in one run of two."""
    import psycopg

    from worker.tools.harness import pgvector_server, proc_status

    with pgvector_server({"shared_buffers": "24MB"}) as url:
        with psycopg.connect(url) as connection:
            assert connection.execute("SHOW shared_buffers").fetchone() == ("24MB",)
            backend = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
            postmaster = int(proc_status(backend, "PPid"))
        assert _running(postmaster)
    # pg_ctl -w returns once the pid file is gone, a moment before the process: wait a
    # little (a leaked server runs on for a minute or more). A zombie has stopped.
    deadline = time.monotonic() + 10
    while _running(postmaster) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(postmaster)


def _running(pid: int) -> bool:
    from worker.tools.harness import proc_status

    state = proc_status(pid, "State")
    return state is not None and not state.startswith("Z")
