"""What every driver's config models share: strict, frozen models and the id pattern of lines and brokers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class DriverModel(BaseModel):
    """A config section: unknown keys are errors (a typo never passes silently), values never change after load."""

    model_config = ConfigDict(extra="forbid", frozen=True)
