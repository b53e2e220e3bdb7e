"""The review page (/review) as a reviewer's browser meets it: the API app called in
process over HTTP here (log-in, CSRF, photos, form posts, metrics), and a real
``fashion api`` process in a real headless Chromium (``test_review_browser.py``)."""

from __future__ import annotations

import io
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
from PIL import Image
from sqlalchemy import func, select

from catalog.codes import KeyScope
from catalog.db import get_sessionmaker
from catalog.models import ClassificationJob, Review
from tests.support.factories import make_flagged_upload, make_key
from tests.support.servers import InProcessApi, PortalClient
from worker.config import Settings
from worker.pipeline.thumbnail import THUMBNAIL_PIXELS
from worker.storage import get_store, thumbnail_key


def log_in(api: InProcessApi, key: str) -> tuple[PortalClient, httpx.Response]:
    """A cookie-keeping client that filled in the log-in form with ``key``."""
    browser = api.browser()
    form = browser.get("/review/login")
    response = browser.post("/review/login", data={"key": key, "csrf_token": form_token(form.text)})
    return browser, response


def post_answer(
    browser: PortalClient,
    page: httpx.Response,
    item_id: str,
    choice: str,
    *,
    partial: bool = False,
    follow_redirects: bool = True,
) -> httpx.Response:
    """Answer an upload as the page's form does (``partial``: as its script does)."""
    return browser.post(
        "/review/answers",
        data={
            "csrf_token": form_token(page.text),
            "queue": "uploads",
            "item_id": item_id,
            "choice": choice,
        },
        headers={"X-Review-Partial": "1"} if partial else {},
        follow_redirects=follow_redirects,
    )


def form_token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html)[1]


def flagged_uploads(settings: Settings, count: int, filename: str = "upload.jpg") -> list[str]:
    """``count`` flagged uploads with a real photo each, oldest first."""
    buffer = io.BytesIO()
    Image.new("RGB", (900, 600), (200, 40, 40)).save(buffer, "JPEG")
    ids = []
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        for _ in range(count):
            job = make_flagged_upload(session, filename=filename)
            get_store(settings).put(job.image_key, buffer.getvalue())
            ids.append(str(job.id))
    return ids


def stored_reviews(settings: Settings) -> list[tuple[str, int | None, str]]:
    with get_sessionmaker(settings.resolved_database_url)() as session:
        return [
            (str(row.job_id), row.label, row.answer)
            for row in session.scalars(select(Review).order_by(Review.id))
        ]


def test_only_reviewer_keys_log_in_and_reviewer_keys_cannot_call_the_api(
    local_settings, open_api
) -> None:
    api = open_api(local_settings)
    backend = make_key(local_settings, "web-shop")
    alice = make_key(local_settings, "alice", scope=KeyScope.REVIEWER)

    anonymous = api.get("/review")
    _, with_backend_key = log_in(api, backend.key)
    _, with_wrong_key = log_in(api, "fsk_not-a-key")
    browser, with_reviewer_key = log_in(api, alice.key)
    on_the_api = api.get(
        "/v1/classifications/00000000-0000-0000-0000-000000000000",
        headers={"Authorization": f"Bearer {alice.key}"},
    )

    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/review/login"
    assert with_backend_key.status_code == 401 and "not a reviewer" in with_backend_key.text
    assert with_wrong_key.status_code == 401
    assert (
        with_reviewer_key.status_code == 303 and with_reviewer_key.headers["location"] == "/review"
    )
    cookie = with_reviewer_key.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/review" in cookie
    page = browser.get("/review")
    assert page.status_code == 200 and "alice" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert on_the_api.status_code == 403 and on_the_api.json()["error"]["code"] == "forbidden"


def test_posts_without_the_csrf_token_are_refused_and_store_nothing(
    local_settings, open_api
) -> None:
    (job_id,) = flagged_uploads(local_settings, 1)
    api = open_api(local_settings)
    alice = make_key(local_settings, "alice", scope=KeyScope.REVIEWER)
    browser, _ = log_in(api, alice.key)
    answer = {"queue": "uploads", "item_id": job_id, "choice": "4"}

    no_token = browser.post("/review/answers", data=answer, follow_redirects=False)
    wrong_token = browser.post(
        "/review/answers", data={**answer, "csrf_token": "guess"}, follow_redirects=False
    )
    non_ascii_token = browser.post(
        "/review/answers", data={**answer, "csrf_token": "jeton-été"}, follow_redirects=False
    )
    login_without_token = api.post("/review/login", data={"key": alice.key})
    huge = browser.post("/review/answers", data={**answer, "padding": "x" * 100_000})

    assert (no_token.status_code, wrong_token.status_code) == (403, 403)
    assert non_ascii_token.status_code == 403
    assert login_without_token.status_code == 403
    assert huge.status_code == 413
    assert stored_reviews(local_settings) == []


def test_without_javascript_an_answer_is_a_form_post_and_the_next_item_follows(
    local_settings, open_api
) -> None:
    hostile = "<img src=x onerror=alert(1)>.jpg"  # a customer names their upload
    older, newer = flagged_uploads(local_settings, 2, filename=hostile)
    api = open_api(local_settings)
    alice = make_key(local_settings, "alice", scope=KeyScope.REVIEWER)
    browser, _ = log_in(api, alice.key)

    first = browser.get("/review")
    posted = post_answer(browser, first, newer, "4", follow_redirects=False)
    second = browser.get(posted.headers["location"])
    partial = post_answer(browser, first, older, "out_of_catalog", partial=True)
    bad_choice = post_answer(browser, first, older, "label")

    assert f'data-item-id="{newer}"' in first.text  # newest first
    assert hostile not in first.text and "&lt;img src=x onerror=alert(1)&gt;.jpg" in first.text
    assert posted.status_code == 303 and posted.headers["location"] == "/review?queue=uploads"
    assert f'data-item-id="{older}"' in second.text
    assert partial.status_code == 200 and "<html" not in partial.text
    assert "Nothing waits in this queue" in partial.text
    assert bad_choice.status_code == 400
    assert stored_reviews(local_settings) == [
        (newer, 4, "label"),
        (older, None, "out_of_catalog"),
    ]


def test_photos_are_thumbnails_for_logged_in_reviewers_only_and_logout_ends_it(
    local_settings, open_api
) -> None:
    (job_id,) = flagged_uploads(local_settings, 1)
    api = open_api(local_settings)
    alice = make_key(local_settings, "alice", scope=KeyScope.REVIEWER)
    browser, _ = log_in(api, alice.key)

    photo = browser.get(f"/review/photos/upload/{job_id}")
    anonymous = api.get(f"/review/photos/upload/{job_id}")
    unknown = browser.get("/review/photos/upload/00000000-0000-0000-0000-000000000000")
    page = browser.get("/review")
    logged_out = browser.post(
        "/review/logout", data={"csrf_token": form_token(page.text)}, follow_redirects=False
    )
    after = browser.get("/review", follow_redirects=False)

    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(photo.content)).size) == THUMBNAIL_PIXELS
    assert anonymous.status_code == 401 and unknown.status_code == 404
    assert logged_out.status_code == 303
    assert after.status_code == 303 and after.headers["location"] == "/review/login"


def test_metrics_show_the_queues_the_answers_and_the_agreement(local_settings, open_api) -> None:
    first, _second, _third = flagged_uploads(local_settings, 3)
    api = open_api(local_settings)
    alice = make_key(local_settings, "alice", scope=KeyScope.REVIEWER)
    browser, _ = log_in(api, alice.key)
    page = browser.get("/review")
    post_answer(browser, page, first, "2")  # Pullover: the model's top class

    metrics = api.get("/metrics").text

    assert 'fashion_review_queue_length{queue="uploads"} 2.0' in metrics
    assert 'fashion_review_queue_length{queue="audit"} 0.0' in metrics
    assert 'fashion_reviews{answer="label"} 1.0' in metrics
    assert "fashion_review_model_agreement 1.0" in metrics
    with get_sessionmaker(local_settings.resolved_database_url)() as session:
        assert session.scalar(select(func.count()).select_from(Review)) == 1


def test_the_last_answer_can_be_undone_and_its_upload_comes_back_first(
    local_settings, open_api
) -> None:
    """An answer removes the item from everyone's queue: a slip of the key must not be
    final. The page offers the reviewer's last answer back (key u), as a form post and
    as the script's partial post, and shows the item again."""
    older, newest = flagged_uploads(local_settings, 2)
    api = open_api(local_settings)
    alice = make_key(local_settings, "alice", scope=KeyScope.REVIEWER)
    bob = make_key(local_settings, "bob", scope=KeyScope.REVIEWER)
    browser, _ = log_in(api, alice.key)
    page = post_answer(browser, browser.get("/review"), newest, "3")  # Dress, meant Coat
    offered = re.search(r'name="review_id" value="(\d+)"', page.text)
    assert offered is not None and 'id="last-answer">Dress<' in page.text
    assert f'data-item-id="{older}"' in page.text

    others, _ = log_in(api, bob.key)
    by_bob = others.post(
        "/review/undo",
        data={"csrf_token": form_token(others.get("/review").text), "review_id": offered[1]},
    )
    no_token = browser.post("/review/undo", data={"review_id": offered[1]})
    undone = browser.post(
        "/review/undo",
        data={"csrf_token": form_token(page.text), "review_id": offered[1]},
        headers={"X-Review-Partial": "1"},
    )

    assert by_bob.status_code == 409 and "no such answer of yours" in by_bob.text
    assert no_token.status_code == 403
    assert undone.status_code == 200
    assert f'data-item-id="{newest}"' in undone.text and "last-answer" not in undone.text
    assert stored_reviews(local_settings) == []
    again = post_answer(browser, page, newest, "4")  # Coat
    assert stored_reviews(local_settings) == [(newest, 4, "label")]
    assert 'id="last-answer">Coat<' in again.text


def forty_megapixel_uploads(settings: Settings, count: int) -> list[str]:
    """``count`` flagged uploads, each a 6324×6324 photo in a few hundred KB: a TIFF
    and an RGBA PNG, the formats that cannot be decoded reduced."""
    photos = []
    for kind, mode in (("TIFF", "RGB"), ("PNG", "RGBA")):
        buffer = io.BytesIO()
        options = {"compression": "tiff_deflate"} if kind == "TIFF" else {}
        Image.new(mode, (6324, 6324), (180, 60, 60, 255)[: len(mode)]).save(buffer, kind, **options)
        photos.append(buffer.getvalue())
    ids = []
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        for index in range(count):
            job = make_flagged_upload(session, filename=f"huge-{index}")
            get_store(settings).put(job.image_key, photos[index % 2])
            ids.append(str(job.id))
    return ids


def test_thumbnails_of_40_megapixel_uploads_keep_the_api_process_flat(
    local_settings, start_api
) -> None:
    """One thumbnail of a 6324×6324 TIFF raised the API's RSS from 217 to 708 MB, nine
    at once to 3.2 GB, kept until restart. A photo without a stored thumbnail is now
    shrunk in a short-lived process of its own, once: what it makes is kept."""
    ids = forty_megapixel_uploads(local_settings, 20)
    api = start_api(local_settings)
    alice = make_key(local_settings, "alice", scope=KeyScope.REVIEWER)
    browser = httpx.Client(base_url=api.url, timeout=60)
    form = browser.get("/review/login")
    browser.post("/review/login", data={"key": alice.key, "csrf_token": form_token(form.text)})
    assert browser.get("/review").status_code == 200
    before = api.memory_mb()

    with ThreadPoolExecutor(9) as pool:
        photos = list(pool.map(lambda job_id: browser.get(f"/review/photos/upload/{job_id}"), ids))

    after = api.memory_mb()
    print(f"API RSS across 20 thumbnails of 40 Mpx uploads: {before:.0f} → {after:.0f} MB")
    assert [photo.status_code for photo in photos] == [200] * len(ids)
    assert {max(Image.open(io.BytesIO(p.content)).size) for p in photos} == {THUMBNAIL_PIXELS}
    assert after - before < 50, f"the API grew {after - before:.0f} MB for 20 thumbnails"
    with get_sessionmaker(local_settings.resolved_database_url)() as session:
        keys = session.scalars(select(ClassificationJob.image_key)).all()
    assert len(keys) == 20 and all(get_store(local_settings).exists(thumbnail_key(k)) for k in keys)


def test_the_model_top_3_shows_each_category_with_the_key_that_answers_it(
    local_settings, open_api
) -> None:
    (job_id,) = flagged_uploads(local_settings, 1)  # Pullover 55 %, Coat 40 %, Shirt 5 %
    api = open_api(local_settings)
    alice = make_key(local_settings, "alice", scope=KeyScope.REVIEWER)
    browser, _ = log_in(api, alice.key)
    top = browser.get("/review").text.split('<ol class="top" id="top">')[1].split("</ol>")[0]
    shown = re.findall(r'<span class="name">([^<]+)</span> <kbd title="its key">(\d)</kbd>', top)
    assert shown == [("Pullover", "3"), ("Coat", "5"), ("Shirt", "7")]
