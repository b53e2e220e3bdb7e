"""The review loop in a real browser: Debian's headless Chromium, driven by Selenium
through Debian's chromedriver, against a real ``fashion api``, a real worker,
PostgreSQL, Redis and the S3 server.

The sample catalog (one bag listed as a dress) and the sample uploads go through
the real pipeline; the reviewer logs in, answers each flagged upload with one key
press and the mislisted bag likewise; the answers are in the database and the next
item came without a reload. Screenshots of both queues are saved to
``$FASHION_REVIEW_SCREENSHOTS`` (``docs/`` holds the committed ones) or the test's
temporary folder.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select

from catalog.codes import CATEGORIES, KeyScope
from catalog.db import get_sessionmaker
from catalog.models import ClassificationJob, Review
from catalog.queries import audit_mismatches, get_product
from tests.support.factories import make_key
from tests.support.jobs import unclassified
from tests.support.servers import wait_until
from worker.api.review import LABEL_KEYS, SKIP_KEY, UNDO_KEY
from worker.review_export import folder_name
from worker.service.catalog_import import import_catalog

pytestmark = pytest.mark.browser

SAMPLES = Path(__file__).resolve().parents[1] / "worker" / "samples"
WINDOW = (1100, 760)
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)


@pytest.fixture()
def chromium() -> Iterator[WebDriver]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_binary = shutil.which("chromedriver")
    assert binary and driver_binary, (
        "Chromium and chromedriver are needed: scripts/test installs Debian's "
        "chromium and chromium-driver"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_binary), options=options)
    yield driver
    driver.quit()


def shown_item(driver: WebDriver) -> str | None:
    """The id of the item on the page, ``None`` when the queue is empty (read in one
    script: the item's element is replaced as an answer lands)."""
    return driver.execute_script(
        "const item = document.getElementById('item'); return item && item.dataset.itemId"
    )


def press(driver: WebDriver, key: str, current: str) -> float:
    """Press ``key``; seconds until another item (or the empty queue) shows."""
    started = time.perf_counter()
    ActionChains(driver).send_keys(key).perform()
    WebDriverWait(driver, 15, poll_frequency=0.005).until(lambda d: shown_item(d) != current)
    return time.perf_counter() - started


def test_a_reviewer_answers_flagged_uploads_and_the_audit_by_key_in_chromium(
    service_settings, start_worker, start_api, chromium, tmp_path
) -> None:
    settings = service_settings
    shots = Path(os.environ.get("FASHION_REVIEW_SCREENSHOTS") or tmp_path)
    folder = tmp_path / "catalog"
    shutil.copytree(SAMPLES / "products", folder / "products")
    (folder / "catalog.csv").write_text(
        (SAMPLES / "catalog.csv")
        .read_text()
        .replace("BAG-001,Bag no. 1,Bag,", "BAG-001,Bag no. 1,Dress,")
    )
    import_catalog(folder / "catalog.csv", settings=settings)
    start_worker(settings, queues="both")
    api = start_api(settings)
    backend = make_key(settings, "web-shop")
    reviewer = make_key(settings, "alice", scope=KeyScope.REVIEWER)
    sessions = get_sessionmaker(settings.resolved_database_url)

    wait_until(lambda: unclassified(settings) == 0, timeout=120, what="the catalog classified")
    for path in sorted((SAMPLES / "uploads").glob("*.jpg")):
        response = httpx.post(
            f"{api.url}/v1/classifications",
            params={"wait": 10},
            files={"file": (path.name, path.read_bytes(), "image/jpeg")},
            headers={"Authorization": f"Bearer {backend.key}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
    with sessions() as session:
        flagged = {
            str(job.id): job.filename
            for job in session.scalars(
                select(ClassificationJob).where(ClassificationJob.uncertain.is_(True))
            )
        }
        bag = get_product(session=session, sku="BAG-001")
        bag_id, bag_predicted = str(bag.id), bag.live_prediction.predicted_category
    assert flagged, "the bundled model flags none of the sample uploads"
    assert bag_predicted == "Bag"
    truth = {folder_name(label) + ".jpg": label for label in range(len(CATEGORIES))}

    chromium.get(f"{api.url}/review")
    chromium.find_element(By.ID, "key").send_keys(reviewer.key)
    chromium.find_element(By.ID, "login").click()
    WebDriverWait(chromium, 15).until(lambda d: shown_item(d) is not None)
    chromium.save_screenshot(str(shots / "review-uploads.png"))
    chromium.execute_script("window.sameDocument = true")
    first = shown_item(chromium)
    slip = LABEL_KEYS[(truth[flagged[first]] + 1) % len(CATEGORIES)]
    press(chromium, slip, first)  # a slip of the key, the answer stored...
    press(chromium, UNDO_KEY, shown_item(chromium))  # ...and taken back: the upload returns
    assert shown_item(chromium) == first
    seconds = []
    while (item := shown_item(chromium)) is not None:
        seconds.append(press(chromium, LABEL_KEYS[truth[flagged[item]]], item))
    assert chromium.execute_script("return window.sameDocument === true")
    assert chromium.find_elements(By.ID, "empty")

    chromium.find_element(By.ID, "queue-audit").click()
    WebDriverWait(chromium, 15).until(lambda d: "queue=audit" in d.current_url)
    audit_seen = []
    while (item := shown_item(chromium)) is not None:
        audit_seen.append(item)
        if item == bag_id:
            assert chromium.find_element(By.ID, "listed").text == "Dress"
            assert chromium.find_element(By.ID, "top").text.startswith("Bag")
            chromium.save_screenshot(str(shots / "review-audit.png"))
            seconds.append(press(chromium, LABEL_KEYS[CATEGORIES.index("Bag")], item))
        else:
            seconds.append(press(chromium, SKIP_KEY, item))

    with sessions() as session:
        answers = {
            str(review.job_id or review.product_id): (review.answer, review.label)
            for review in session.scalars(select(Review))
        }
        relisted = audit_mismatches(session=session)
        bag = get_product(session=session, sku="BAG-001")
    assert {job: answers[job] for job in flagged} == {
        job: ("label", truth[name]) for job, name in flagged.items()
    }
    assert bag_id in audit_seen and answers[bag_id] == ("label", CATEGORIES.index("Bag"))
    assert bag.reviewed_category == "Bag"
    assert relisted[0].sku == "BAG-001" and relisted[0].reviewed_category == "Bag"
    for name in ("review-uploads.png", "review-audit.png"):
        with Image.open(shots / name) as shot:
            assert shot.width == WINDOW[0] and len(shot.convert("L").getcolors(65536)) > 50
    print(
        f"\nreview page: {len(seconds)} answers by key, key press to next item "
        f"median {statistics.median(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms "
        f"(the page allows {60 / statistics.median(seconds):.0f} items a minute)"
    )
