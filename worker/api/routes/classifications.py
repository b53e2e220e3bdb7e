"""``/v1/classifications``: upload a photo, read its result (long-poll), erase it.

Every handler that touches the database, the broker or storage runs their
(blocking) clients in Starlette's thread pool; long-polls (``wait``) sleep on the
event loop between reads, so a waiting request holds no thread.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from catalog.codes import TERMINAL_STATUSES, ErrorCode
from catalog.public import Accepted, JobResult, job_result
from catalog.queries import as_uuid
from worker import client
from worker.api.auth import Caller
from worker.api.deps import AppServices, CurrentCaller, Services, not_found, owned_job
from worker.api.errors import ApiError, ApiErrorCode, error_responses
from worker.api.uploads import read_upload
from worker.api.waiting import Answer
from worker.callbacks import MAX_URL_LENGTH, CallbackUrlError, check_callback_url
from worker.errors import FashionError
from worker.service.retention import erase

#: The longest a request may wait for its result (``wait``), in seconds.
MAX_WAIT = 10.0

WaitSeconds = Annotated[
    float,
    Query(ge=0, le=MAX_WAIT, description="Seconds to wait for the result (long-poll), at most 10."),
]

#: An http(s) URL of a public unicast address, port 1-65535, no spaces or control
#: characters, at most 2000 characters (``worker.callbacks``); the schema can say
#: all but "public": a private or unresolvable host is answered 400.
CALLBACK_URL_SCHEMA = {
    "type": "string",
    "format": "uri",
    "pattern": "^https?://[^\\s\\x00-\\x1f\\x7f]+$",
    "maxLength": MAX_URL_LENGTH,
}
# Declared, not validated by FastAPI: a URL that breaks these rules is answered 400
# invalid_request by worker.callbacks, like every other refused URL.
CallbackUrl = Query(
    description="POST the finished result here, signed: http(s) on a public address.",
    json_schema_extra={k: v for k, v in CALLBACK_URL_SCHEMA.items() if k != "type"},
)

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The photo: the raw bytes (Content-Type: image/jpeg, image/png, …) "
        "or a multipart/form-data body with the field `file`.",
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "callback_url": CALLBACK_URL_SCHEMA,
                    },
                    "required": ["file"],
                }
            },
        },
    }
}

router = APIRouter(prefix="/v1/classifications", tags=["classifications"])


def _status(app: Services, caller: Caller, job_id: str) -> str:
    with app.sessions() as session:
        return owned_job(session=session, caller=caller, job_id=job_id).status


def _result(app: Services, caller: Caller, job_id: str) -> JobResult:
    with app.sessions() as session:
        return job_result(
            session=session, job=owned_job(session=session, caller=caller, job_id=job_id)
        )


async def wait_for(app: Services, caller: Caller, job_id: str, wait: float) -> JobResult | Answer:
    """The caller's job once it has finished, or as it is after ``wait`` seconds: the
    answer the worker's notice brought (JSON-ready) or, without one, read."""
    job_uuid = as_uuid(job_id)
    if job_uuid is None:
        raise not_found(f"no job {job_id}")
    if wait > 0:

        async def finished_now() -> bool:  # and the caller's own job, or 404
            return await run_in_threadpool(_status, app, caller, job_id) in TERMINAL_STATUSES

        answer = await app.waiters.until_finished(job_uuid, wait, finished_now)
        if answer is not None:
            return answer
    return await run_in_threadpool(_result, app, caller, job_id)


def answered(job: JobResult | Answer, headers: dict[str, str]) -> JSONResponse | None:
    """A finished job's answer as the response (``None``: not finished yet)."""
    if isinstance(job, JobResult):
        if not job.finished:
            return None
        job = job.model_dump(mode="json", by_alias=True)
    return JSONResponse(job, headers=headers)


@router.post(
    "",
    status_code=202,
    response_model=Accepted,
    openapi_extra=UPLOAD_BODY,
    responses={
        200: {"model": JobResult, "description": "Finished within `wait`: the result."},
        **error_responses(400, 401, 403, 409, 413, 415, 422, 429, 503),
    },
)
async def create_classification(
    request: Request,
    response: Response,
    app: AppServices,
    caller: CurrentCaller,
    wait: WaitSeconds = 0,
    callback_url: Annotated[str | None, CallbackUrl] = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Accepted | JSONResponse:
    """Upload a photo for classification.

    202 with the job's `id` (and `Location`), or 200 with the result when it
    finished within `wait` seconds. The same `Idempotency-Key` with the same
    bytes answers the same job; with other bytes, 409.
    """
    settings = app.settings
    depth = app.depth.remembered()
    if depth is None:
        depth = await run_in_threadpool(app.depth.current)
    if depth >= settings.api_max_queue_depth:
        raise ApiError(
            429,
            ApiErrorCode.QUEUE_FULL,
            f"more than {settings.api_max_queue_depth} uploads are waiting; try again shortly",
            {"Retry-After": "2"},
        )
    upload = await read_upload(request, limit=settings.max_upload_bytes)
    if not upload.data:
        raise ApiError(400, ErrorCode.EMPTY, "the upload has no bytes")
    callback_url = callback_url or upload.fields.get("callback_url")
    if callback_url:
        try:
            await run_in_threadpool(
                check_callback_url, callback_url, allow_private=settings.webhook_allow_private
            )
        except CallbackUrlError as exc:
            raise ApiError(400, ApiErrorCode.INVALID_REQUEST, str(exc)) from exc
    job_id = uuid.uuid4()

    async def submit() -> client.Submission:
        try:
            return await run_in_threadpool(
                lambda: client.submit_upload(
                    upload.data,
                    upload.filename,
                    settings=settings,
                    api_key_id=caller.key_id,
                    idempotency_key=idempotency_key,
                    callback_url=callback_url or None,
                    content_type=upload.content_type,
                    job_id=job_id,
                )
            )
        except client.IdempotencyConflict as exc:
            raise ApiError(409, ApiErrorCode.IDEMPOTENCY_CONFLICT, str(exc)) from exc
        except FashionError as exc:
            raise ApiError(400, exc.code, exc.message) from exc

    answer = None
    if wait > 0:
        # Watched before it exists: its notice cannot come unheard, and no read of its
        # status is needed before waiting (one thread-pool hop and query less).
        async with app.waiters.watching(job_id) as finished:
            submitted = await submit()
            if submitted.created:
                answer = await finished(wait)
    else:  # nobody waits: no waiter, no poller, no subscription
        submitted = await submit()
    headers = {"Location": f"/v1/classifications/{submitted.job_id}"}
    if submitted.created:
        app.depth.accepted()
        # The caller's own new job: the notice's answer needs no read (nor ownership).
        job = answer or await run_in_threadpool(_result, app, caller, submitted.job_id)
    else:  # an earlier request's job, which may have finished long ago
        headers["Idempotent-Replayed"] = "true"
        job = await wait_for(app, caller, submitted.job_id, wait)
    if (finished_answer := answered(job, headers)) is not None:
        return finished_answer
    response.headers.update(headers)
    return Accepted(id=job.job_id, status=job.status)


@router.get(
    "/{job_id}",
    response_model=JobResult,
    responses=error_responses(401, 403, 404, 422, 429, 503),
)
async def read_classification(
    job_id: str, app: AppServices, caller: CurrentCaller, wait: WaitSeconds = 0
) -> JobResult | JSONResponse:
    """A job's state and, once done, its label and similar in-stock items; with
    `wait`, answers as soon as it finishes (or after `wait` seconds)."""
    job = await wait_for(app, caller, job_id, wait)
    return job if isinstance(job, JobResult) else JSONResponse(job)


@router.delete(
    "/{job_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(401, 403, 404, 409, 422, 429, 503),
)
async def delete_classification(job_id: str, app: AppServices, caller: CurrentCaller) -> Response:
    """Erase the uploaded photo and the result (a customer's right to erasure)."""

    def erase_owned() -> None:
        with app.sessions() as session:
            job = owned_job(session=session, caller=caller, job_id=job_id)
            if job.status not in TERMINAL_STATUSES:
                raise ApiError(
                    409,
                    ApiErrorCode.JOB_NOT_FINISHED,
                    f"job {job_id} is {job.status}; delete it once it has finished",
                )
            pair = (str(job.id), job.image_key)
        erase(app.settings, [pair])

    await run_in_threadpool(erase_owned)
    return Response(status_code=204)
