"""Customers' photos: the garment is cut out of a busy background, product photos are
left alone, and ``fashion evaluate --photos`` scores a folder of real photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.support.factories import png_bytes
from tests.support.photos import hat_on_a_rug, trousers_on_a_rug, write_photo_folder
from training.photo_threshold import fit_threshold
from training.shop_photos import make_shop_photo
from worker.cli import main
from worker.pipeline.classifier import Classifier
from worker.pipeline.foreground import border_ring, needs_cutout
from worker.pipeline.preprocess import (
    BORDER_WIDTH_FRACTION,
    TRIM_THRESHOLD,
    decode,
    normalize,
    prepare,
    preprocess,
    to_grayscale,
)

SHARED_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clothing-photos"
LIMITS = {"max_bytes": 50_000_000, "max_pixels": 50_000_000}


def ring_needs_cutout(data: bytes) -> bool:
    gray = np.asarray(to_grayscale(decode(data, **LIMITS)))
    return needs_cutout(border_ring(gray, BORDER_WIDTH_FRACTION), TRIM_THRESHOLD)


def test_a_garment_on_a_busy_background_is_cut_out(bundled_model) -> None:
    photo = trousers_on_a_rug()
    assert ring_needs_cutout(photo)

    pixels = preprocess(photo, **LIMITS)

    # Only the trousers are left, bright on black, filling the frame's height
    # (the rug would otherwise have been kept as part of the "item").
    rows = np.flatnonzero((pixels > 40).any(axis=1))
    assert rows[-1] - rows[0] >= 24
    assert pixels[:, :3].max() < 40 and pixels[:, -3:].max() < 40  # beside the legs: empty
    assert pixels[20:, 12:16].mean() < 0.5 * pixels[20:, 8:12].mean()  # the gap between the legs
    from worker.pipeline.classifier import BUNDLED_MODEL, Classifier
    from worker.pipeline.preprocess import normalize

    probabilities = Classifier(BUNDLED_MODEL).predict_proba(normalize(pixels[None]))[0]
    assert int(probabilities.argmax()) == 1  # Trouser
    assert np.array_equal(pixels, preprocess(photo, **LIMITS)), "the same photo, the same pixels"


def test_product_photos_on_a_plain_background_are_not_cut_out(fashion_mnist) -> None:
    rng = np.random.default_rng(3)
    photos = [make_shop_photo(tile, rng) for tile in fashion_mnist.train_images[:60]]
    assert not any(ring_needs_cutout(photo) for photo in photos)


def test_a_photo_pack_trains_like_its_folder_and_keeps_its_mapping(
    tmp_path: Path, fashion_mnist
) -> None:
    from training.photo_data import load_photos, targets_for_folder

    folder = tmp_path / "photos"
    write_photo_folder(folder, fashion_mnist)
    # The folder's own mapping: hats become bags, pants are not trained on.
    (folder / "mapping.json").write_text(
        json.dumps({"pants": "skip", "shoes": [5, 7, 9], "hat": [8], "longsleeve": None})
    )
    pack = tmp_path / "packs" / "photos.npz"
    result = CliRunner().invoke(main, ["pack-photos", str(folder), "--out", str(pack)])
    assert result.exit_code == 0, result.output
    assert "10 photos packed" in result.output and "1 unreadable files left out" in result.output

    targets = targets_for_folder(pack)
    assert targets == targets_for_folder(folder) == {
        "shoes": [5, 7, 9], "hat": [8], "longsleeve": None
    }  # fmt: skip
    from_pack, from_folder = load_photos(pack, targets), load_photos(folder, targets)
    assert len(from_pack[0]) == 7  # 3 shoes, 2 hats, 2 longsleeves; no pants
    np.testing.assert_array_equal(from_pack[0], from_folder[0])
    np.testing.assert_array_equal(from_pack[1], from_folder[1])
    # --mapping given at training time wins over the one recorded in the pack.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"pants": [1]}))
    assert targets_for_folder(pack, other) == {"pants": [1]}
    assert len(load_photos(pack, {"pants": [1]})[0]) == 3


def test_a_photo_pack_needs_its_suffix_and_a_bad_pack_is_named(
    tmp_path: Path, fashion_mnist
) -> None:
    from training.photo_data import load_photos

    write_photo_folder(tmp_path / "photos", fashion_mnist)
    result = CliRunner().invoke(
        main, ["pack-photos", str(tmp_path / "photos"), "--out", str(tmp_path / "photos.zip")]
    )
    assert result.exit_code == 1 and "ends with .npz" in result.output
    assert not (tmp_path / "photos.zip").exists()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a pack")
    with pytest.raises(ValueError, match="is not a photo pack"):
        load_photos(bad)


def test_a_photo_pack_made_by_another_pipeline_version_is_refused(
    tmp_path: Path, fashion_mnist, monkeypatch
) -> None:
    import training.photo_data as photo_data
    import worker.pipeline.preprocess as preprocess

    folder = tmp_path / "photos"
    write_photo_folder(folder, fashion_mnist)
    pack = tmp_path / "photos.npz"
    assert (
        photo_data.pack_photos(folder, pack)["preprocess_version"] == preprocess.PREPROCESS_VERSION
    )
    assert len(photo_data.load_photos(pack)[0]) == 10

    # The pipeline changes after the pack was made: training on it is refused.
    monkeypatch.setattr(photo_data, "PREPROCESS_VERSION", preprocess.PREPROCESS_VERSION + 1)
    with pytest.raises(ValueError, match=r"packed by version \d+ .* pack them again"):
        photo_data.load_photos(pack)
    # A pack from before the version was recorded was made by version 1.
    monkeypatch.setattr(photo_data, "PREPROCESS_VERSION", 1)
    with np.load(pack) as arrays:
        older = {key: arrays[key] for key in arrays.files if key != "preprocess_version"}
    np.savez_compressed(tmp_path / "older.npz", **older)
    assert len(photo_data.load_photos(tmp_path / "older.npz")[0]) == 10
    monkeypatch.setattr(photo_data, "PREPROCESS_VERSION", 2)
    with pytest.raises(ValueError, match="packed by version 1"):
        photo_data.load_photos(tmp_path / "older.npz")


def test_split_photos_holds_out_a_share_of_each_class_without_copying(
    tmp_path: Path, fashion_mnist
) -> None:
    from training.photo_folders import photo_files

    folder = tmp_path / "photos"
    write_photo_folder(folder, fashion_mnist)
    (folder / "mapping.json").write_text(json.dumps({"shoes": [5, 7, 9], "hat": None}))
    out = tmp_path / "split"
    args = ["split-photos", str(folder), "--out", str(out), "--held-out", "0.34", "--seed", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output

    original = photo_files(folder)
    fit, held = photo_files(out / "fit"), photo_files(out / "held-out")
    for name, files in original.items():  # pants: 3 photos and the damaged file
        names = {f.name for f in files}
        fitted, kept_back = {f.name for f in fit.get(name, [])}, {f.name for f in held[name]}
        assert not fitted & kept_back and fitted | kept_back == names
        assert len(kept_back) == round(0.34 * len(files))
    link = held["shoes"][0]
    assert link.is_symlink() and link.resolve() == (folder / "shoes" / link.name).resolve()
    assert (out / "fit" / "mapping.json").read_text() == (folder / "mapping.json").read_text()
    assert (out / "held-out" / "mapping.json").is_file()

    again = CliRunner().invoke(main, args)  # the same draw, but never over an earlier split
    assert again.exit_code == 1 and "already holds a split" in again.output
    other = CliRunner().invoke(main, [*args[:3], str(tmp_path / "again"), *args[4:]])
    assert other.exit_code == 0
    assert sorted(p.name for p in photo_files(tmp_path / "again" / "held-out")["pants"]) == sorted(
        p.name for p in held["pants"]
    )


def test_evaluate_photos_scores_a_folder_with_the_mapping(
    tmp_path: Path, fashion_mnist, bundled_model
) -> None:
    write_photo_folder(tmp_path / "photos", fashion_mnist)
    report = tmp_path / "report"
    result = CliRunner().invoke(
        main, ["evaluate", "--photos", str(tmp_path / "photos"), "--json", "--report", str(report)]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)

    assert scores["model_version"] == bundled_model[0]
    assert (scores["photos"], scores["scored_photos"], scores["out_of_catalog_photos"]) == (8, 6, 2)
    assert set(scores["per_class"]) == {"pants", "shoes"}  # longsleeve is not scored
    assert scores["per_class"]["pants"] == {"accuracy": 1.0, "uncertain": 0.0, "photos": 3}
    # Any of the three shoe classes counts for a shoe photo.
    assert scores["per_class"]["shoes"]["accuracy"] == 1.0
    assert sum(scores["confusion"]["rows"]["shoes"][i] for i in (5, 7, 9)) == 3
    assert scores["accuracy"] == 1.0 and scores["min_class_accuracy"] == 1.0
    assert 0.0 <= scores["uncertain_out_of_catalog"] <= 1.0
    assert list(scores["unreadable"].values()) == ["corrupt"]
    assert Path(scores["plots"]["examples"]).stat().st_size > 10_000

    # Product photos on a plain background: the cut-out changes nothing.
    plain = CliRunner().invoke(
        main, ["evaluate", "--photos", str(tmp_path / "photos"), "--json", "--no-cutout"]
    )
    without = json.loads(plain.stdout)
    assert (scores["cutout"], without["cutout"]) == (True, False)
    assert without["confusion"] == scores["confusion"]
    assert without["uncertain_out_of_catalog"] == scores["uncertain_out_of_catalog"]


def test_evaluate_photos_refuses_a_bad_mapping_with_the_reason(
    tmp_path: Path, fashion_mnist
) -> None:
    write_photo_folder(tmp_path / "photos", fashion_mnist)
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"pants": [11]}))
    result = CliRunner().invoke(
        main, ["evaluate", "--photos", str(tmp_path / "photos"), "--mapping", str(mapping)]
    )
    assert result.exit_code != 0
    assert "'pants' maps to [11]" in result.output


def a_model_that_always_says(label: int, folder: Path) -> Path:
    """A model that gives ``label`` probability ~1 for every image, with the bundled
    card's thresholds; returns its float .tflite path."""
    import keras

    from training.export import export_tflite, sha256_of
    from worker.pipeline.classifier import CARD_FILENAME

    model_file = copy_bundled_model(folder)
    image = keras.Input(shape=(28, 28, 1))
    embedding = keras.layers.Dense(4, name="embedding")(keras.layers.Flatten()(image))
    logits = keras.layers.Dense(10, name="logits")(embedding)
    model = keras.Model(image, logits)
    model.get_layer("embedding").set_weights([np.zeros((784, 4)), np.ones(4)])
    model.get_layer("logits").set_weights([np.zeros((4, 10)), 20.0 * np.eye(10)[label]])
    export_tflite(model, model_file)
    card_path = model_file.with_name(CARD_FILENAME)
    card = json.loads(card_path.read_text())
    card.update(version=f"always-{label}", sha256=sha256_of(model_file), default_engine="float")
    card_path.write_text(json.dumps(card))
    return model_file


def test_compare_photos_counts_the_photos_only_one_model_gets_right(
    tmp_path: Path, fashion_mnist, bundled_model
) -> None:
    from worker.pipeline.classifier import BUNDLED_MODEL

    write_photo_folder(tmp_path / "photos", fashion_mnist)
    always_bag = a_model_that_always_says(8, tmp_path / "bag")
    photos = str(tmp_path / "photos")

    # Against the worker's model (the default), which gets all 6 mapped photos right.
    worse = CliRunner().invoke(
        main, ["compare-photos", photos, str(always_bag), "--margin", "2", "--json"]
    )
    assert worse.exit_code == 1, worse.output  # 6 fewer photos right: beyond the margin
    compared = json.loads(worse.stdout)
    assert compared["models"]["candidate"]["model_version"] == "always-8"
    assert compared["models"]["baseline"]["model_version"] == bundled_model[0]
    assert (compared["scored_photos"], compared["out_of_catalog_photos"]) == (6, 2)
    assert compared["models"]["candidate"]["correct"] == 0
    assert compared["models"]["baseline"]["correct"] == 6
    counts = ("both_right", "both_wrong", "only_candidate", "only_baseline")
    assert tuple(compared[k] for k in counts) == (0, 0, 0, 6)
    assert (compared["difference_photos"], compared["non_inferior"]) == (-6, False)
    assert compared["mcnemar_p"] == round(2 * 0.5**6, 4)
    assert sorted(Path(p).parent.name for p in compared["only_baseline_photos"]) == (
        ["pants"] * 3 + ["shoes"] * 3
    )
    # Sure of "Bag" for every photo, it flags none of the out-of-catalog bags.
    assert compared["models"]["candidate"]["uncertain_out_of_catalog"] == 0.0
    assert list(compared["unreadable"].values()) == ["corrupt"]

    # The other way round, a named baseline: better by 6 is within any margin.
    better = CliRunner().invoke(
        main,
        ["compare-photos", photos, str(BUNDLED_MODEL), "--against", str(always_bag)]
        + ["--margin", "0"],
    )
    assert better.exit_code == 0, better.output
    assert "0 right for both, 0 wrong for both, 6 right only for the candidate" in better.output
    assert "+6 photos" in better.output
    assert "the candidate is non-inferior" in better.output

    # Without a margin there is no verdict, and no failing exit.
    plain = CliRunner().invoke(main, ["compare-photos", photos, str(always_bag), "--json"])
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["non_inferior"] is None

    # A file that is not a model is named, not a traceback.
    (tmp_path / "notes.tflite").write_text("not a model")
    bad = CliRunner().invoke(main, ["compare-photos", photos, str(tmp_path / "notes.tflite")])
    assert bad.exit_code == 1 and isinstance(bad.exception, SystemExit), bad.exception
    assert "Error: model card" in bad.output and "does not exist" in bad.output


@pytest.mark.skipif(
    not (SHARED_PHOTOS / "validation").is_dir(),
    reason=f"real photos not here: {SHARED_PHOTOS / 'validation'} is absent on this machine",
)
def test_evaluate_photos_on_the_real_validation_photos() -> None:
    result = CliRunner().invoke(
        main, ["evaluate", "--photos", str(SHARED_PHOTOS / "validation"), "--json"]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    longsleeves = len(list((SHARED_PHOTOS / "validation" / "longsleeve").iterdir()))
    total = sum(1 for _ in (SHARED_PHOTOS / "validation").glob("*/*"))
    assert scores["photos"] + len(scores["unreadable"]) == total - longsleeves
    assert set(scores["per_class"]) == {"t-shirt", "pants", "dress", "outwear", "shirt", "shoes"}
    # The shipped model meets the targets on photos it was not tuned on.
    assert scores["accuracy"] >= 0.70 and scores["min_class_accuracy"] >= 0.50
    assert scores["uncertain_out_of_catalog"] >= 0.50
    assert scores["uncertain_scored"] <= 0.15


def test_bench_photos_times_both_pipelines_on_every_photo(tmp_path: Path) -> None:
    (tmp_path / "pants").mkdir()
    for seed in range(3):
        (tmp_path / "pants" / f"{seed}.jpg").write_bytes(trousers_on_a_rug(seed))
    result = CliRunner().invoke(main, ["bench-photos", str(tmp_path), "--json", "--rounds", "2"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert (figures["photos"], figures["median_size"]) == (3, [400, 600])
    assert figures["with_cutout"]["n"] == figures["without_cutout"]["n"] == 6
    assert set(figures["throughput_per_core"]) == {"with_cutout", "without_cutout"}


def test_prepare_says_which_uploads_had_a_busy_background(fashion_mnist) -> None:
    rug = prepare(trousers_on_a_rug(), **LIMITS)
    shop = prepare(
        make_shop_photo(fashion_mnist.train_images[0], np.random.default_rng(1)), **LIMITS
    )
    tile = prepare(png_bytes(fashion_mnist.train_images[0]), **LIMITS)
    assert (rug.busy_background, shop.busy_background, tile.busy_background) == (True, False, False)
    assert np.array_equal(rug.pixels, preprocess(trousers_on_a_rug(), **LIMITS))
    # Without the cut-out (a comparison mode) the background is still reported.
    assert prepare(trousers_on_a_rug(), cutout=False, **LIMITS).busy_background


def write_rug_photos(root: Path, *, per_class: int) -> Path:
    """pants/ (trousers on a rug: in the catalog) and hat/ (out of it), on a busy
    background, ``per_class`` photos each."""
    for name, make in (("pants", trousers_on_a_rug), ("hat", hat_on_a_rug)):
        (root / name).mkdir(parents=True)
        for seed in range(per_class):
            (root / name / f"{seed}.jpg").write_bytes(make(seed))
    return root


def copy_bundled_model(folder: Path) -> Path:
    """The bundled model (every artifact: the card's default engine may be a quantized
    one) and its card in ``folder``; returns the float .tflite path."""
    from worker.pipeline.classifier import BUNDLED_MODEL

    shutil.copytree(BUNDLED_MODEL.parent, folder)
    return folder / BUNDLED_MODEL.name


def test_fit_photo_threshold_warns_when_the_model_trained_on_the_folder(
    tmp_path: Path, bundled_model
) -> None:
    from training.photo_data import pack_photos
    from worker.pipeline.classifier import CARD_FILENAME

    photos = write_rug_photos(tmp_path / "photos", per_class=3)
    pack_photos(photos, tmp_path / "photos.npz")
    model = copy_bundled_model(tmp_path / "model")
    card = json.loads(model.with_name(CARD_FILENAME).read_text())
    args = ["fit-photo-threshold", str(photos), "--model", str(model), "--repeats", "3", "--json"]

    cases = ((None, False), (tmp_path, False), (photos, True), (tmp_path / "photos.npz", True))
    for trained_on, warned in cases:
        card["photos_in_training"] = None if trained_on is None else {"dir": str(trained_on)}
        model.with_name(CARD_FILENAME).write_text(json.dumps(card))
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert ("was trained on" in result.stderr) is warned, trained_on
        assert (json.loads(result.stdout)["warning"] is not None) is warned

    # Photo fine-tuning counts too, and so does any member's training for an ensemble.
    card["photos_in_training"] = None
    for field, value in (
        ("photo_finetune", {"dir": str(photos)}),
        ("member_photo_sources", [str(tmp_path), str(tmp_path / "photos.npz")]),
    ):
        model.with_name(CARD_FILENAME).write_text(json.dumps({**card, field: value}))
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert "was trained on" in result.stderr, field


def test_fit_photo_threshold_writes_the_card_and_evaluate_then_uses_it(
    tmp_path: Path, bundled_model
) -> None:
    from worker.pipeline.classifier import BUNDLED_MODEL, CARD_FILENAME

    photos = write_rug_photos(tmp_path / "photos", per_class=4)
    model = copy_bundled_model(tmp_path / "model")
    bundled_card = BUNDLED_MODEL.with_name(CARD_FILENAME).read_text()

    dry = CliRunner().invoke(
        main, ["fit-photo-threshold", str(photos), "--model", str(model), "--repeats", "5"]
    )
    assert dry.exit_code == 0, dry.output
    assert "not written (add --write)" in dry.output
    assert model.with_name(CARD_FILENAME).read_text() == bundled_card

    result = CliRunner().invoke(
        main,
        ["fit-photo-threshold", str(photos), "--model", str(model), "--write", "--json"]
        + ["--max-flagged", "0.1", "--repeats", "5"],
    )
    assert result.exit_code == 0, result.output
    fitted = json.loads(result.stdout)
    files = sorted(photos.glob("*/*"))
    confidences = Classifier(model).predict_proba(
        normalize(np.stack([preprocess(p.read_bytes(), **LIMITS) for p in files]))
    )
    pants = np.array([p.parent.name == "pants" for p in files])
    expected = fit_threshold(confidences[pants].max(axis=1), 0.1)
    assert fitted["photo_uncertain_threshold"] == expected
    assert (fitted["fit"]["mapped_photos"], fitted["fit"]["out_of_catalog_photos"]) == (4, 4)
    assert fitted["fit"]["cross_fit"]["repeats"] == 5
    card = json.loads(model.with_name(CARD_FILENAME).read_text())
    assert card["photo_uncertain_threshold"] == expected
    assert card["photo_threshold_fit"]["max_flagged"] == 0.1
    assert BUNDLED_MODEL.with_name(CARD_FILENAME).read_text() == bundled_card

    scores = CliRunner().invoke(
        main, ["evaluate", "--photos", str(photos), "--model", str(model), "--json"]
    )
    evaluated = json.loads(scores.stdout)
    assert evaluated["photo_uncertain_threshold"] == expected
    assert evaluated["busy_background"] == 1.0
    assert evaluated["uncertain_scored"] <= 0.1
    confidence_of = dict(zip(files, confidences.max(axis=1), strict=True))
    hats_below = np.mean([confidence_of[p] < expected for p in photos.glob("hat/*")])
    assert evaluated["uncertain_out_of_catalog"] == hats_below


def test_fit_photo_threshold_refuses_a_folder_without_in_catalog_photos(tmp_path: Path) -> None:
    (tmp_path / "hat").mkdir()
    (tmp_path / "hat" / "0.jpg").write_bytes(hat_on_a_rug())
    result = CliRunner().invoke(main, ["fit-photo-threshold", str(tmp_path)])
    assert result.exit_code != 0
    assert "no photo of a mapped class on a busy background" in result.output
