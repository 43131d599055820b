"""HTTP routes for people's field input: surveyors' CSV / XLSX results, and inspection findings (巡视检查)."""

import base64
import binascii
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from alerting.db import audit, tx
from gateway import refusals
from gateway.auth import User
from gateway.surveys import SurveyRefused
from telemetry.reading import Reading

if TYPE_CHECKING:
    from gateway.parts import GatewayParts

MAX_FILE_BYTES = 10 * 1024 * 1024  # a month of daily results for a few hundred points is well under 1 MB


class SurveyUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=200)
    content_b64: str = Field(min_length=4, max_length=MAX_FILE_BYTES * 4 // 3 + 4)
    quantity: str | None = Field(default=None, max_length=64)  # for files without an item column (监测项目)


class Inspection(BaseModel):
    """A danger condition found on inspection at a monitored point (GB 50497-2019 §8.0.9), or its all-clear."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field(min_length=1, max_length=64)
    finding: str = Field(min_length=1, max_length=500)  # what the inspector saw: shown with the alarm
    danger: bool = True  # false: the condition is gone (the alarm clears)


def add_survey_routes(
    app: FastAPI, gw: "GatewayParts", officer: Callable[..., Any], viewer: Callable[..., Any]
) -> None:
    @app.exception_handler(SurveyRefused)
    async def _refused(_: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, SurveyRefused)
        errors = [
            {"row": p.row, "column": p.column, "message": p.message, "message_zh": refusals.message_zh(422, p.message)}
            for p in err.problems
        ]
        zh = f"测量文件未导入：{len(errors)} 处问题"
        return JSONResponse({"detail": str(err), "detail_zh": zh, "errors": errors}, status_code=422)

    @app.post("/api/surveys")
    async def import_survey(body: SurveyUpload, user: Annotated[User, Depends(officer)]) -> dict[str, Any]:
        """Import a surveyor's results whole or not at all; alarms are evaluated on the survey times."""
        try:
            data = base64.b64decode(body.content_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("content_b64: not base64") from None
        result = await gw.surveys.import_file(data, body.filename, user.name, body.quantity)
        return result.as_dict()

    @app.post("/api/inspections")
    async def inspection(body: Inspection, user: Annotated[User, Depends(officer)]) -> dict[str, Any]:
        """危险 from a person: the finding raises exc.inspection_danger on the point; the finding is its comment."""
        dev = next((d for d in gw.cfg.devices if d.id == body.device), None)
        if dev is None:
            raise ValueError(f"device: unknown device {body.device!r}")
        if not any(r.id == "exc.inspection_danger" for r in gw.alarms.rules_by_device.get(dev.id, [])):
            raise ValueError(f"device: {dev.id} is not an excavation point (exc.inspection_danger does not apply)")
        now = gw.alarms.clock()
        what = "inspection.danger" if body.danger else "inspection.clear"
        with tx(gw.alarms.conn):
            audit(gw.alarms.conn, now, user.name, what, f"device:{dev.id}", body.finding)
        await gw.pipeline.submit([Reading(dev.id, "inspection_danger", 1.0 if body.danger else 0.0, now)])
        await gw.pipeline.drained()  # evaluated: the alarm (or its clearing) exists now
        alarm = next(
            (a for a in gw.alarms.lifecycle.open_alarms() if a.rule == "exc.inspection_danger" and a.device == dev.id),
            None,
        )
        if alarm is not None:
            gw.alarms.lifecycle.comment(alarm.id, user.name, f"巡视检查: {body.finding}")
            gw.alarms.store_events()
        return {"device": dev.id, "danger": body.danger, "alarm_id": alarm.id if alarm else None}

    @app.get("/api/surveys")
    async def survey_imports(
        _: Annotated[User, Depends(viewer)], limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[dict[str, Any]]:
        return gw.surveys.imports(min(limit, 1000))
