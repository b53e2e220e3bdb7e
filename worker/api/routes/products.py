"""``/v1/products``: what the catalog offers like one of its own products."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from catalog.public import ProductSimilar, SimilarItem
from catalog.queries import get_product
from catalog.similar import similar_to_product
from catalog.versions import live_version
from worker.api.deps import AppServices, CurrentCaller, not_found
from worker.api.errors import error_responses

router = APIRouter(prefix="/v1/products", tags=["products"])


@router.get(
    "/{sku}/similar",
    response_model=ProductSimilar,
    responses=error_responses(401, 403, 404, 422, 429, 503),
)
async def product_similar(
    sku: str,
    app: AppServices,
    _caller: CurrentCaller,
    limit: Annotated[int, Query(ge=1, le=100)] = 5,
) -> ProductSimilar:
    """In-stock products most like a catalog product's photo, best first."""

    def lookup() -> ProductSimilar:
        with app.sessions() as session:
            product = get_product(session=session, sku=sku)
            if product is None:
                raise not_found(f"no product {sku!r}")
            live = live_version(session=session)
            ranked = (
                []
                if live is None
                else similar_to_product(
                    session=session,
                    product=product,
                    model_version=live.version,
                    top_k=limit,
                    ef_search=app.settings.similar_ef_search,
                )
            )
            return ProductSimilar(
                sku=product.sku,
                similar=[
                    SimilarItem(
                        rank=rank,
                        sku=other.sku,
                        name=other.name,
                        score=round(score, 6),
                        in_stock=other.in_stock,
                    )
                    for rank, (other, score) in enumerate(ranked, start=1)
                ],
            )

    return await run_in_threadpool(lookup)
