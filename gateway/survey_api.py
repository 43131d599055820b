"""HTTP routes for survey imports: upload a surveyor's CSV / XLSX (base64 in JSON), list the imports."""

import base64
import binascii
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import User
from gateway.surveys import SurveyRefused

if TYPE_CHECKING:
    from gateway.app import Gateway

MAX_FILE_BYTES = 10 * 1024 * 1024  # a month of daily results for a few hundred points is well under 1 MB


class SurveyUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=200)
    content_b64: str = Field(min_length=4, max_length=MAX_FILE_BYTES * 4 // 3 + 4)
    quantity: str | None = Field(default=None, max_length=64)  # for files without an item column (监测项目)


def add_survey_routes(app: FastAPI, gw: "Gateway", officer: Callable[..., Any], viewer: Callable[..., Any]) -> None:
    @app.exception_handler(SurveyRefused)
    async def _refused(_: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, SurveyRefused)
        errors = [{"row": p.row, "column": p.column, "message": p.message} for p in err.problems]
        return JSONResponse({"detail": str(err), "errors": errors}, status_code=422)

    @app.post("/api/surveys")
    async def import_survey(body: SurveyUpload, user: Annotated[User, Depends(officer)]) -> dict[str, Any]:
        """Import a surveyor's results whole or not at all; alarms are evaluated on the survey times."""
        try:
            data = base64.b64decode(body.content_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("content_b64: not base64") from None
        result = await gw.surveys.import_file(data, body.filename, user.name, body.quantity)
        return result.as_dict()

    @app.get("/api/surveys")
    async def survey_imports(_: Annotated[User, Depends(viewer)], limit: int = 100) -> list[dict[str, Any]]:
        return gw.surveys.imports(min(max(limit, 1), 1000))
