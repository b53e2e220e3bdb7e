"""``/v1/models``: which model versions the catalog knows and which one answers (read-only).

Changing them is an operator's work (``fashion model …``), not a web backend's.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from catalog.public import ModelVersionPublic, model_versions
from worker.api.deps import AppServices, CurrentCaller
from worker.api.errors import error_responses

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get(
    "",
    response_model=list[ModelVersionPublic],
    responses=error_responses(401, 403, 429, 503),
)
async def list_models(app: AppServices, _caller: CurrentCaller) -> list[ModelVersionPublic]:
    """Every registered model version, the live one first, with its catalog coverage."""

    def read() -> list[ModelVersionPublic]:
        with app.sessions() as session:
            return model_versions(session=session)

    return await run_in_threadpool(read)
