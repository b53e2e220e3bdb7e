"""``/review``: people answer what the model is unsure of, in a browser.

Server-rendered (Jinja2, ``worker/api/templates/review``); a few lines of plain JS
(``review.js``) send an answer on a key press and swap in the next item without a
page reload, and without JS every answer is an ordinary form post.

Who may review: a key of scope ``reviewer`` (``fashion api-key create NAME --scope
reviewer``), pasted once into the log-in form. Backend keys cannot log in here, and
reviewer keys cannot call ``/v1`` (403). A log-in is a random token in an HttpOnly,
``SameSite=Strict`` cookie scoped to ``/review`` (the database keeps its SHA-256);
every post carries the session's CSRF token (a form field or ``X-CSRF-Token``),
the log-in form a double-submit token. Photos are served through here as their
stored thumbnails (``thumbnails.py``), never by a bucket URL.
"""

from __future__ import annotations

import datetime as dt
import html
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from catalog.api_keys import authenticate
from catalog.codes import CATEGORIES, KeyScope, ReviewAnswer, ReviewQueue
from catalog.models import ApiKey, ClassificationJob, Product, as_utc
from catalog.queries import as_uuid
from catalog.review_results import review_stats
from catalog.review_sessions import close_session, find_session, open_session
from catalog.reviews import (
    LastAnswer,
    ReviewError,
    ReviewItem,
    is_row_id,
    last_answer,
    next_item,
    queue_lengths,
    record_answer,
    undo_answer,
)
from worker.api.deps import AppServices, Services
from worker.api.thumbnails import ThumbnailError, thumbnail
from worker.errors import FashionError
from worker.storage import get_store

TEMPLATES = Path(__file__).parent / "templates"
SESSION_COOKIE = "fashion_review"
LOGIN_CSRF_COOKIE = "fashion_review_login"
COOKIE_PATH = "/review"
#: The header ``review.js`` sends to get the next item's fragment instead of a redirect.
PARTIAL_HEADER = "x-review-partial"
#: Keys that answer: ``1``-``9`` are labels 0-8, ``0`` is label 9 (Ankle boot).
LABEL_KEYS = [str((label + 1) % 10) for label in range(len(CATEGORIES))]
OUT_OF_CATALOG_KEY, SKIP_KEY, UNDO_KEY = "o", "s", "u"
#: The page's forms are a few fields; a larger body is refused before it is all read.
MAX_FORM_BYTES = 16 * 1024
#: The page's script and style sheet (no inline code: the CSP forbids it).
STATIC = {"review.js": "text/javascript", "review.css": "text/css"}
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class Reviewer:
    key_id: int
    name: str
    csrf_token: str


def age(value: dt.datetime | None) -> str:
    """ "3 min ago" and the like, for the page."""
    if value is None:
        return ""
    seconds = (dt.datetime.now(dt.UTC) - as_utc(value)).total_seconds()
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


router = APIRouter(prefix="/review", include_in_schema=False)
templates = Jinja2Templates(directory=TEMPLATES / "review")
templates.env.filters["age"] = age
# The top 3 show each category's key, so "3" beside 55 % is not misread as a rank.
templates.env.globals["label_keys"] = LABEL_KEYS


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers.update(PAGE_HEADERS)
    return response


def _logged_in(app: Services, token: str | None) -> Reviewer | None:
    if not token:
        return None
    with app.sessions() as session:
        found = find_session(session=session, token=token)
        if found is None:
            return None
        login, key = found
        return Reviewer(key.id, key.name, login.csrf_token)


async def current_reviewer(request: Request, app: AppServices) -> Reviewer | None:
    """The reviewer whose log-in cookie came with the request, if any."""
    return await run_in_threadpool(_logged_in, app, request.cookies.get(SESSION_COOKIE))


CurrentReviewer = Annotated[Reviewer | None, Depends(current_reviewer)]


def view(
    app: Services, reviewer: Reviewer, queue: ReviewQueue, first: str | None = None
) -> dict[str, Any]:
    """What the page shows: the next item of ``queue`` (``first`` while it waits), the
    queues' lengths, stats, and the reviewer's last answer while it can be taken back."""
    with app.sessions() as session:
        item = next_item(
            session=session,
            reviewer_id=reviewer.key_id,
            queue=queue,
            ef_search=app.settings.similar_ef_search,
            first=first,
        )
        lengths = queue_lengths(session=session, reviewer_id=reviewer.key_id)
        stats = review_stats(session=session)
        undo = last_answer(session=session, reviewer_id=reviewer.key_id)
    return {
        "reviewer": reviewer,
        "queue": queue,
        "queues": list(ReviewQueue),
        "lengths": lengths,
        "stats": stats,
        "item": item,
        "choices": choices(item),
        "undo": undo,
        "undo_key": UNDO_KEY,
    }


@router.get("/login")
async def login_form(request: Request) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = page(request, "login.html", {"csrf_token": token, "error": None})
    set_cookie(request, response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


@router.post("/login")
async def login(request: Request, app: AppServices) -> Response:
    form = await small_form(request)
    if form is None:
        return too_large()
    sent, expected = form.get("csrf_token", ""), request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or not same_token(sent, expected):
        return forbidden("the log-in form expired; load it again")

    def check(key: str) -> str | None:
        with app.sessions.begin() as session:
            reviewer = authenticate(session=session, key=key, scope=KeyScope.REVIEWER)
            if reviewer is None:
                return None
            return open_session(session=session, reviewer=reviewer).token

    token = await run_in_threadpool(check, form.get("key", "").strip())
    if token is None:
        fresh = secrets.token_urlsafe(24)
        response = page(
            request,
            "login.html",
            {"csrf_token": fresh, "error": "Unknown, revoked or not a reviewer's key."},
            status=401,
        )
        set_cookie(request, response, LOGIN_CSRF_COOKIE, fresh, max_age=3600)
        return response
    response = RedirectResponse("/review", status_code=303)
    set_cookie(request, response, SESSION_COOKIE, token, max_age=12 * 3600)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/logout")
async def logout(request: Request, app: AppServices, reviewer: CurrentReviewer) -> Response:
    form = await small_form(request)
    if form is None:
        return too_large()
    if reviewer is not None:
        if not csrf_ok(request, reviewer, form.get("csrf_token")):
            return forbidden("missing or wrong CSRF token")

        def close() -> None:
            with app.sessions.begin() as session:
                close_session(session=session, token=request.cookies[SESSION_COOKIE])

        await run_in_threadpool(close)
    response = RedirectResponse("/review/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


@router.get("")
async def review_page(
    request: Request,
    app: AppServices,
    reviewer: CurrentReviewer,
    queue: ReviewQueue = ReviewQueue.UPLOADS,
    first: str | None = None,
) -> Response:
    if reviewer is None:
        return RedirectResponse("/review/login", status_code=303)
    context = await run_in_threadpool(view, app, reviewer, queue, first)
    return page(request, "page.html", context)


async def posted_form(request: Request, reviewer: Reviewer | None) -> dict[str, str] | Response:
    """A logged-in reviewer's posted form, or the answer that refuses it: to the log-in
    page, 413 past ``MAX_FORM_BYTES``, 403 without the session's CSRF token."""
    if reviewer is None:
        return RedirectResponse("/review/login", status_code=303)
    form = await small_form(request)
    if form is None:
        return too_large()
    if not csrf_ok(request, reviewer, form.get("csrf_token")):
        return forbidden("missing or wrong CSRF token")
    return form


@router.post("/answers")
async def answer(request: Request, app: AppServices, reviewer: CurrentReviewer) -> Response:
    form = await posted_form(request, reviewer)
    if isinstance(form, Response):
        return form
    try:
        queue = ReviewQueue(form.get("queue", ""))
        choice, label = parse_choice(form.get("choice", ""))
    except ValueError:
        return page(request, "error.html", {"message": "Not a valid answer."}, status=400)

    def store() -> None:
        with app.sessions.begin() as session:
            record_answer(
                session=session,
                reviewer=session.get_one(ApiKey, reviewer.key_id),
                queue=queue,
                item_id=form.get("item_id", ""),
                answer=choice,
                label=label,
            )

    try:
        await run_in_threadpool(store)
    except ReviewError as exc:
        if PARTIAL_HEADER not in request.headers:
            return page(request, "error.html", {"message": str(exc)}, status=409)
    if PARTIAL_HEADER in request.headers:
        context = await run_in_threadpool(view, app, reviewer, queue)
        return page(request, "_main.html", context)
    return RedirectResponse(f"/review?queue={queue.value}", status_code=303)


@router.post("/undo")
async def undo(request: Request, app: AppServices, reviewer: CurrentReviewer) -> Response:
    """Take back the reviewer's last answer (``UNDO_WINDOW``): the item is shown again."""
    form = await posted_form(request, reviewer)
    if isinstance(form, Response):
        return form
    review_id = form.get("review_id", "")
    if not is_row_id(review_id):
        return page(request, "error.html", {"message": "Not an answer."}, status=400)

    def take_back(reviewer_id: int) -> LastAnswer:
        with app.sessions.begin() as session:
            return undo_answer(session=session, reviewer_id=reviewer_id, review_id=int(review_id))

    try:
        taken = await run_in_threadpool(take_back, reviewer.key_id)
    except ReviewError as exc:
        return page(request, "error.html", {"message": str(exc)}, status=409)
    if PARTIAL_HEADER in request.headers:
        context = await run_in_threadpool(view, app, reviewer, taken.queue, taken.item_id)
        return page(request, "_main.html", context)
    return RedirectResponse(
        f"/review?queue={taken.queue.value}&first={taken.item_id}", status_code=303
    )


@router.get("/photos/{kind}/{item_id}")
async def photo(kind: str, item_id: str, app: AppServices, reviewer: CurrentReviewer) -> Response:
    if reviewer is None:
        return Response(status_code=401)
    data = await run_in_threadpool(thumbnail_of, app, kind, item_id)
    if data is None:
        return Response(status_code=404)
    return Response(
        data,
        media_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        return Response(status_code=404)
    return Response(
        (TEMPLATES / "review" / name).read_bytes(),
        media_type=STATIC[name],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


def thumbnail_of(app: Services, kind: str, item_id: str) -> bytes | None:
    with app.sessions() as session:
        if kind == "upload":
            job_id = as_uuid(item_id)
            key = (
                None
                if job_id is None
                else session.scalar(
                    select(ClassificationJob.image_key).where(ClassificationJob.id == job_id)
                )
            )
        elif kind == "product" and is_row_id(item_id):
            key = session.scalar(select(Product.image_key).where(Product.id == int(item_id)))
        else:
            key = None
    if key is None:
        return None
    try:
        return thumbnail(get_store(app.settings), key, app.settings)
    except (FashionError, ThumbnailError):
        return None


def choices(item: ReviewItem | None) -> list[dict[str, Any]]:
    """The answer buttons: the ten categories (the model's top-3 marked), out of
    catalog, skip; each with its key."""
    if item is None:
        return []
    top = {label for label, _name, _p in item.top}
    buttons = [
        {"value": str(label), "key": key, "text": name, "top": label in top}
        for label, (key, name) in enumerate(zip(LABEL_KEYS, CATEGORIES, strict=True))
    ]
    buttons.append(
        {
            "value": ReviewAnswer.OUT_OF_CATALOG.value,
            "key": OUT_OF_CATALOG_KEY,
            "text": "Not in the catalog",
            "top": False,
        }
    )
    buttons.append(
        {"value": ReviewAnswer.SKIP.value, "key": SKIP_KEY, "text": "Skip", "top": False}
    )
    return buttons


def parse_choice(value: str) -> tuple[ReviewAnswer, int | None]:
    """A button's value: a label (``"0"``-``"9"``), ``out_of_catalog`` or ``skip``."""
    if value.isdigit() and int(value) < len(CATEGORIES):
        return ReviewAnswer.LABEL, int(value)
    answer = ReviewAnswer(value)
    if answer == ReviewAnswer.LABEL:
        raise ValueError("a label answer is sent as its number")
    return answer, None


def csrf_ok(request: Request, reviewer: Reviewer, sent: str | None) -> bool:
    token = sent or request.headers.get("x-csrf-token", "")
    return bool(token) and same_token(token, reviewer.csrf_token)


def same_token(sent: str, expected: str) -> bool:
    """Constant-time comparison (of bytes: ``compare_digest`` refuses non-ASCII text)."""
    return secrets.compare_digest(sent.encode(), expected.encode())


async def small_form(request: Request) -> dict[str, str] | None:
    """The url-encoded form (first value of each field), or ``None`` past
    ``MAX_FORM_BYTES``: read as a stream and refused the moment it passes the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def too_large() -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><title>Too large</title><p>The form is too large.</p>",
        status_code=413,
        headers=PAGE_HEADERS,
    )


def forbidden(message: str) -> HTMLResponse:
    body = f"<!doctype html><title>Forbidden</title><p>{html.escape(message)}</p>"
    return HTMLResponse(body, status_code=403, headers=PAGE_HEADERS)


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
