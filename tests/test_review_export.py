"""``fashion reviews export``: reviewed photos in the layout the photo tools read,
round-tripped through ``fashion evaluate --photos`` and ``finetune-photos``' loader."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from catalog.codes import CATEGORIES, ReviewAnswer
from catalog.db import get_sessionmaker
from catalog.queries import get_job
from tests.support.factories import answer, make_flagged_upload, make_reviewer
from worker.cli import main
from worker.pipeline.classify import classify_files
from worker.review_export import MAPPING_FILENAME, export_reviews, folder_name
from worker.storage import get_store

SAMPLE_UPLOADS = Path(__file__).resolve().parents[1] / "worker" / "samples" / "uploads"
COAT, PULLOVER, TROUSER = (CATEGORIES.index(name) for name in ("Coat", "Pullover", "Trouser"))
#: Sample upload → the answers its reviewers (alice, bob) gave; None: out of catalog.
ANSWERS: dict[str, list[tuple[ReviewAnswer, int | None]]] = {
    "coat.jpg": [(ReviewAnswer.LABEL, COAT), (ReviewAnswer.LABEL, COAT)],
    "pullover.jpg": [(ReviewAnswer.LABEL, PULLOVER)],
    "bag.jpg": [(ReviewAnswer.OUT_OF_CATALOG, None)],
    "sneaker.jpg": [(ReviewAnswer.SKIP, None)],
    "trouser.jpg": [(ReviewAnswer.LABEL, TROUSER), (ReviewAnswer.OUT_OF_CATALOG, None)],
}


def reviewed_samples(settings) -> dict[str, str]:
    """The sample uploads stored as flagged jobs and answered as in ``ANSWERS``;
    sample file name → job id."""
    jobs = {}
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        reviewers = [make_reviewer(session, name) for name in ("alice", "bob")]
        for filename, answers in ANSWERS.items():
            job = make_flagged_upload(session, filename=filename)
            get_store(settings).put(job.image_key, (SAMPLE_UPLOADS / filename).read_bytes())
            jobs[filename] = str(job.id)
            for reviewer, (given, label) in zip(reviewers, answers, strict=False):
                answer(session, reviewer, job, given, label)
    return jobs


def test_the_export_round_trips_through_fashion_evaluate_photos(cli_env, tmp_path) -> None:
    jobs = reviewed_samples(cli_env)
    folder = tmp_path / "reviewed"
    runner = CliRunner()

    exported = runner.invoke(main, ["reviews", "export", str(folder), "--json"])
    evaluated = runner.invoke(main, ["evaluate", "--photos", str(folder), "--json"])

    assert exported.exit_code == 0, exported.output
    report = json.loads(exported.output)
    assert report["photos"] == 3 and report["split"] == 1 and report["missing"] == []
    assert report["by_folder"] == {"coat": 1, "pullover": 1, "out-of-catalog": 1}
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.*")) == [
        f"coat/upload-{jobs['coat.jpg']}.jpg",
        MAPPING_FILENAME,
        f"out-of-catalog/upload-{jobs['bag.jpg']}.jpg",
        f"pullover/upload-{jobs['pullover.jpg']}.jpg",
    ]
    assert (folder / "coat" / f"upload-{jobs['coat.jpg']}.jpg").read_bytes() == (
        SAMPLE_UPLOADS / "coat.jpg"
    ).read_bytes()
    # What the shipped model answers for the same files, through the same pipeline.
    predicted = {
        Path(line["file"]).name: line
        for line in classify_files(
            [SAMPLE_UPLOADS / name for name in ("coat.jpg", "pullover.jpg", "bag.jpg")], cli_env
        )
    }
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads(evaluated.output)
    assert result["scored_photos"] == 2 and result["out_of_catalog_photos"] == 1
    assert result["accuracy"] == np.mean(
        [predicted["coat.jpg"]["label"] == COAT, predicted["pullover.jpg"]["label"] == PULLOVER]
    )
    assert result["uncertain_out_of_catalog"] == float(predicted["bag.jpg"]["uncertain"])


def test_exporting_again_rewrites_and_since_narrows(cli_env, tmp_path) -> None:
    reviewed_samples(cli_env)
    folder = tmp_path / "reviewed"
    runner = CliRunner()
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%d")

    first = runner.invoke(main, ["reviews", "export", str(folder)])
    again = runner.invoke(main, ["reviews", "export", str(folder)])
    later = runner.invoke(main, ["reviews", "export", str(tmp_path / "later"), "--since", tomorrow])

    assert first.exit_code == 0 and again.exit_code == 0, again.output
    assert "exported 3 reviewed photo(s)" in again.output and "split evenly" in again.output
    assert len([p for p in folder.rglob("*.jpg")]) == 3
    assert later.exit_code == 0 and "exported 0 reviewed photo(s)" in later.output


def test_a_photo_gone_from_storage_is_reported_not_exported(cli_env, tmp_path) -> None:
    jobs = reviewed_samples(cli_env)
    with get_sessionmaker(cli_env.resolved_database_url)() as session:
        get_store(cli_env).delete(get_job(session=session, job_id=jobs["coat.jpg"]).image_key)

    exported = CliRunner().invoke(main, ["reviews", "export", str(tmp_path / "out"), "--json"])

    report = json.loads(exported.output)
    assert report["photos"] == 2
    assert report["missing"] == [f"upload-{jobs['coat.jpg']}: object_missing"]


def test_finetune_photos_reads_the_exported_layout_and_its_mapping(cli_env, tmp_path) -> None:
    from training.photo_data import load_photos, photo_targets
    from training.photo_folders import mapping_for

    reviewed_samples(cli_env)
    folder = tmp_path / "reviewed"
    CliRunner().invoke(main, ["reviews", "export", str(folder)])

    targets = photo_targets(mapping_for(folder))
    pixels, masks = load_photos(folder, targets)

    assert targets[folder_name(COAT)] == [COAT] and targets["out-of-catalog"] is None
    assert pixels.shape == (3, 28, 28)
    # Sorted by folder: coat, out-of-catalog (all classes), pullover.
    assert masks.tolist() == [
        np.eye(len(CATEGORIES))[COAT].tolist(),
        [1.0] * len(CATEGORIES),
        np.eye(len(CATEGORIES))[PULLOVER].tolist(),
    ]


def test_a_float_tiff_the_worker_classified_is_exported_as_the_worker_read_it(
    local_settings, tmp_path
) -> None:
    """It was listed as ``unreadable``: PNG cannot hold a float image as it is."""
    import io

    from PIL import Image

    pixels = np.full((64, 64), 10.0, dtype=np.float32)
    pixels[16:48, 20:44] = 900.0
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="F").save(buffer, format="TIFF")
    with get_sessionmaker(local_settings.resolved_database_url).begin() as session:
        job = make_flagged_upload(session, filename="float.tif")
        get_store(local_settings).put(job.image_key, buffer.getvalue())
        answer(session, make_reviewer(session), job, ReviewAnswer.LABEL, label=8)

    report = export_reviews(tmp_path / "out", settings=local_settings)

    assert report.missing == []
    (written,) = (tmp_path / "out" / folder_name(8)).iterdir()
    assert written.suffix == ".png"
    with Image.open(written) as exported:
        assert exported.mode == "L" and exported.size == (64, 64)
