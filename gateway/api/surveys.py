"""Routes of people's field input: surveyors' CSV / XLSX results, and inspection findings (巡视检查)."""

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse

from alerting.db import audit, tx
from gateway import refusals
from gateway.api.bodies import Inspection, SurveyUpload
from gateway.api.deps import Officer, Viewer, decoded
from gateway.parts import GatewayParts
from gateway.surveys import SurveyRefused
from telemetry.reading import Reading


def install_refusal(app: FastAPI) -> None:
    """A refused file answers with every problem, row and column named, in English and Chinese."""

    @app.exception_handler(SurveyRefused)
    async def _refused(_: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, SurveyRefused)
        errors = [
            {
                "sheet": p.sheet,
                "row": p.row,
                "column": p.column,
                "message": p.message,
                "message_zh": refusals.message_zh(422, p.message),
            }
            for p in err.problems
        ]
        zh = f"测量文件未导入：{len(errors)} 处问题"
        return JSONResponse({"detail": str(err), "detail_zh": zh, "errors": errors}, status_code=422)


def router(gw: GatewayParts) -> APIRouter:
    r = APIRouter()
    eng = gw.alarms

    @r.post("/api/surveys")
    async def import_survey(body: SurveyUpload, user: Officer) -> dict[str, Any]:
        """Import a surveyor's results whole or not at all; alarms are evaluated on the survey times."""
        data = decoded(body.content_b64)
        result = await gw.surveys.import_file(data, body.filename, user.name, body.quantity)
        return result.as_dict()

    @r.post("/api/inspections")
    async def inspection(body: Inspection, user: Officer) -> dict[str, Any]:
        """危险 from a person: the finding raises exc.inspection_danger on the point; the finding is its comment."""
        dev = next((d for d in gw.cfg.devices if d.id == body.device), None)
        if dev is None:
            raise ValueError(f"device: unknown device {body.device!r}")
        if not any(x.id == "exc.inspection_danger" for x in eng.rules_by_device.get(dev.id, [])):
            raise ValueError(f"device: {dev.id} is not an excavation point (exc.inspection_danger does not apply)")
        now = eng.clock()
        what = "inspection.danger" if body.danger else "inspection.clear"
        with tx(eng.conn):
            audit(eng.conn, now, user.name, what, f"device:{dev.id}", body.finding)
        await gw.pipeline.submit([Reading(dev.id, "inspection_danger", 1.0 if body.danger else 0.0, now)])
        await gw.pipeline.drained()  # evaluated: the alarm (or its clearing) exists now
        alarm = next(
            (a for a in eng.lifecycle.open_alarms() if a.rule == "exc.inspection_danger" and a.device == dev.id),
            None,
        )
        if alarm is not None:
            eng.lifecycle.comment(alarm.id, user.name, f"巡视检查: {body.finding}")
            eng.store_events()
        return {"device": dev.id, "danger": body.danger, "alarm_id": alarm.id if alarm else None}

    @r.get("/api/surveys")
    async def survey_imports(_: Viewer, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        return gw.surveys.imports(min(limit, 1000))

    return r
