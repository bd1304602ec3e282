"""`/v1/rankings/{id}/confirmations`: fine-tune a ranking's top models and read the result back."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from app.deps import Ctx, Db, OwnedConfirmation, OwnedRanking, TenantId
from app.openapi_doc import error_responses
from app.schemas import ConfirmationIn, ConfirmationOut
from app.services import confirmations as service

router = APIRouter(prefix="/v1", tags=["confirmations"])
_ERR = error_responses(401, 404, 409, 422, 429, 503)


@router.post(
    "/rankings/{ranking_id}/confirmations",
    status_code=202,
    response_model=ConfirmationOut,
    responses={**_ERR, **error_responses(400), 202: {"links": {
        op: {"operationId": op, "parameters": {"ranking_id": "$response.body#/ranking_id", "confirmation_id": "$response.body#/id"}}
        for op in ("get_confirmation", "cancel_confirmation")
    }}},
    summary="Confirm a ranking by fine-tuning its top models",
    description=(
        "Fine-tunes `top_k` (default 2) of the ranking's models, or the listed `models`, by F-fold cross-validation "
        "over the pilot cases (default leave-one-out up to 5 cases, 5-fold above; one worker task per model and fold, "
        "fresh decoder, per-fold seeds). `expected_cost` quotes seconds of worker time from measured seconds per step. "
        "Folds already fine-tuned under the same pilot set, model, fold plan, config, seed and code version are reused. "
        "When every fold has finished, the confirmation records an evaluation of the ranking (truth = mean held-out Dice) "
        "if at least two models have every fold done. 409 while the ranking is still running."
    ),
)
def create_confirmation(job: OwnedRanking, body: ConfirmationIn, response: Response, session: Db, tenant: TenantId,
                        ctx: Ctx) -> dict[str, Any]:
    conf = service.create_confirmation(session, tenant, job, body, ctx.dispatcher, ctx.settings)
    response.headers["Location"] = f"/v1/rankings/{job.id}/confirmations/{conf.id}"
    return service.confirmation_view(session, conf)


@router.get(
    "/rankings/{ranking_id}/confirmations/{confirmation_id}",
    response_model=ConfirmationOut,
    responses=_ERR,
    summary="A confirmation: progress, held-out Dice per model and fold, top-1 verdict, evaluation",
)
def get_confirmation(conf: OwnedConfirmation, session: Db) -> dict[str, Any]:
    return service.confirmation_view(session, conf)


@router.post(
    "/rankings/{ranking_id}/confirmations/{confirmation_id}/cancel",
    status_code=202,
    response_model=ConfirmationOut,
    responses=_ERR,
    summary="Cancel a confirmation",
)
def cancel_confirmation(conf: OwnedConfirmation, session: Db) -> dict[str, Any]:
    return service.confirmation_view(session, service.cancel_confirmation(session, conf))
