"""Completion pushed, not polled (issue 36): a worker announces the jobs it finished on
Redis once their rows are committed; a request waiting with ``?wait=`` and
``client.wait`` wake on the notice, and a lost notice costs at most the safety-net
poll (``SAFETY_POLL_S``), never the answer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest

from catalog.db import get_sessionmaker
from catalog.lifecycle import claim_jobs, complete_job
from tests.support.factories import make_key, make_product, png_bytes, random_embedding
from tests.support.jobs import never_sent_job
from worker import client
from worker.service.messages import SAFETY_POLL_S, announce_finished, finished_notice


def finish(settings, job_id: str, *, announce: bool) -> float:
    """Commit the job ``done`` (as a worker does), then announce it or not; returns the
    moment it was committed."""
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        claim_jobs(session=session, job_ids=[job_id], max_attempts=5)
        complete_job(
            session=session,
            job_id=job_id,
            label=1,
            confidence=0.9,
            uncertain=False,
            probabilities=[0.1] * 10,
            model_version="test-model",
        )
    committed = time.monotonic()
    if announce:
        announce_finished(settings, [job_id])
    return committed


def long_poll(api, key: str, job_id: str) -> Callable[[], object]:  # type: ignore[no-untyped-def]
    """A ``GET`` of the job that waits up to 5 s for it to finish."""
    return lambda: api.get(
        f"/v1/classifications/{job_id}",
        params={"wait": 5},
        headers={"Authorization": f"Bearer {key}"},
    )


def woken_after(wait: Callable[[], object], end: Callable[[], float]) -> tuple[object, float]:
    """Start ``wait`` in a thread, end the job once it is parked; what it returned and
    how long after the commit it returned."""
    answer: list[object] = []
    returned: list[float] = []

    def waiting() -> None:
        answer.append(wait())
        returned.append(time.monotonic())

    thread = threading.Thread(target=waiting)
    thread.start()
    time.sleep(0.5)  # parked: its first reads are done
    committed = end()
    thread.join(10)
    return answer[0], returned[0] - committed


@pytest.mark.parametrize("announce", [True, False], ids=["notice", "notice lost"])
def test_a_long_poll_wakes_on_the_notice_and_without_it_on_the_safety_net(
    service_settings, open_api, announce: bool
) -> None:
    api = open_api(service_settings)
    key = make_key(service_settings, "web")
    job_id = never_sent_job(service_settings, owner="web")
    waiters = api.app.state.services.waiters

    answer, seconds = woken_after(
        long_poll(api, key.key, job_id), lambda: finish(service_settings, job_id, announce=announce)
    )

    assert answer.status_code == 200 and answer.json()["status"] == "done"
    print(f"\nlong-poll answered {seconds * 1000:.1f} ms after the commit ({waiters.reads} reads)")
    if announce:
        assert seconds < 0.25 and waiters.pushed == 1
    else:  # the safety net: the next read, at most SAFETY_POLL_S later
        assert 0 < seconds <= SAFETY_POLL_S + 0.5 and waiters.pushed == 0
    assert waiters.listening


@pytest.mark.parametrize("announce", [True, False], ids=["notice", "notice lost"])
def test_client_wait_wakes_on_the_notice_and_without_it_on_the_safety_net(
    service_settings, announce: bool
) -> None:
    job_id = never_sent_job(service_settings)

    answer, seconds = woken_after(
        lambda: client.wait([job_id], timeout=5, settings=service_settings),
        lambda: finish(service_settings, job_id, announce=announce),
    )

    assert answer[job_id].status == "done"
    print(f"\nclient.wait returned {seconds * 1000:.1f} ms after the commit")
    if announce:
        assert seconds < 0.25
    else:
        assert 0.25 < seconds <= SAFETY_POLL_S + 0.5


def test_without_redis_waiters_poll_as_before(local_settings, open_api) -> None:
    """The embedded defaults' folder broker carries no notices: a long-poll reads on
    the old schedule (5 ms, then 50 ms) and still answers at once."""
    api = open_api(local_settings)
    key = make_key(local_settings, "web")
    job_id = never_sent_job(local_settings, owner="web")
    waiters = api.app.state.services.waiters

    answer, seconds = woken_after(
        long_poll(api, key.key, job_id), lambda: finish(local_settings, job_id, announce=True)
    )

    assert answer.json()["status"] == "done" and seconds < 0.25
    assert not waiters.listening and waiters.pushed == 0 and waiters.reads > 5


def test_client_wait_polls_the_catalog_when_redis_cannot_be_reached(service_settings) -> None:
    """No notices to be had (Redis down): ``client.wait`` still answers, by polling."""
    from tests.support.servers import free_port

    job_id = never_sent_job(service_settings)
    finish(service_settings, job_id, announce=False)
    unreachable = service_settings.model_copy(
        update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"}
    )

    answer = client.wait([job_id], timeout=5, settings=unreachable)

    assert answer[job_id].status == "done"


def test_a_waiting_upload_is_answered_from_the_notice_as_the_catalog_reads_it(
    service_settings, start_worker, open_api, fashion_mnist, bundled_model
) -> None:
    """The worker announces each job's answer with its end: the API hands it to the
    waiting upload without reading the catalog, and it is the answer a read gives."""
    version, size = bundled_model
    with get_sessionmaker(service_settings.resolved_database_url).begin() as session:
        for _ in range(3):
            make_product(
                session, category="Trouser", embedding=random_embedding(size), model_version=version
            )
    start_worker(service_settings)
    api = open_api(service_settings)
    key = make_key(service_settings, "web")
    headers = {"Authorization": f"Bearer {key.key}"}

    posted = api.post(
        "/v1/classifications",
        params={"wait": 10},
        content=png_bytes(fashion_mnist.test_images[2]),
        headers={**headers, "Content-Type": "image/png"},
    )

    assert posted.status_code == 200 and posted.json()["status"] == "done"
    assert api.app.state.services.waiters.answered == 1  # from the notice, not read
    assert len(posted.json()["similar"]) == 3
    read = api.get(f"/v1/classifications/{posted.json()['id']}", headers=headers)
    assert read.json() == posted.json()


def test_a_notice_is_read_with_its_answers_without_them_and_when_they_are_garbled(
    caplog,
) -> None:
    first, second = "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "6fa459ea-ee8a-3ca4-894e-db77e160355e"
    answer = {"id": first, "status": "done"}

    assert finished_notice(f"{first} {second}") == {first: None, second: None}  # older workers
    assert finished_notice(f"{first} {second}\n{json.dumps({first: answer})}".encode()) == {
        first: answer,
        second: None,
    }
    assert finished_notice(f"{first}\n[not json") == {first: None}
    assert "not JSON" in caplog.text
    assert finished_notice(f"{first}\n{json.dumps({first: 'done'})}") == {first: None}
    # An older reader of the first line alone still finds the ids among the words.
    assert {first, second} <= set(f"{first} {second}\n{json.dumps({first: answer})}".split())


def test_client_wait_takes_the_answer_from_the_notice_as_the_catalog_reads_it(
    service_settings, start_worker, fashion_mnist, monkeypatch
) -> None:
    settings = service_settings
    start_worker(settings)
    warm = client.submit(png_bytes(fashion_mnist.test_images[0]), "w.png", settings=settings)
    assert client.wait([warm], timeout=60, settings=settings)[warm].status == "done"
    reads: list[str] = []
    read = client.result

    def counted(job_id, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(job_id)
        return read(job_id, **kwargs)

    monkeypatch.setattr(client, "result", counted)
    job_id = client.submit(png_bytes(fashion_mnist.test_images[2]), "t.png", settings=settings)

    answer = client.wait([job_id], timeout=30, settings=settings)[job_id]

    assert answer.status == "done"
    assert reads == [job_id]  # the first look, while it was queued: none after the notice
    assert answer == read(job_id, settings=settings)
