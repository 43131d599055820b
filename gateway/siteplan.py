"""The site plan: its size and drawing, where each device stands, a crane's jib; checked at load, served."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from telemetry.yamlnum import Float

if TYPE_CHECKING:
    from fastapi.responses import FileResponse

# a drawing is shown as an <image> in the console: raster only (an SVG file could carry script)
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
MAX_IMAGE_BYTES = 20 * 1024**2


class SitePlan(BaseModel):
    """The plan's extent in metres; x to the right and y downwards from the drawing's top-left corner, as on paper."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width_m: Float = Field(gt=0, le=5000)
    height_m: Float = Field(gt=0, le=5000)
    image: Path | None = None  # the site drawing (PNG / JPEG / WebP), stretched to width_m x height_m


class PlanPosition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    x_m: Float = Field(ge=0)
    y_m: Float = Field(ge=0)


def check_positions(plan: SitePlan | None, devices: Sequence[Any]) -> None:
    """Every `position` lies on the plan, and there is a plan when a device has one (ValueError naming the device)."""
    for i, d in enumerate(devices):
        p = d.position
        if p is None:
            continue
        at = f"devices[{i}] ({d.id}).position"
        if plan is None:
            raise ValueError(f"{at}: a position needs site.plan (width_m, height_m) to place it on")
        if p.x_m > plan.width_m or p.y_m > plan.height_m:
            raise ValueError(
                f"{at}: ({p.x_m:g}, {p.y_m:g}) m lies outside the plan ({plan.width_m:g} x {plan.height_m:g} m)"
            )


def check_image(plan: SitePlan | None) -> None:
    """The drawing exists, is a raster type and not too large (called once paths are resolved)."""
    if plan is None or plan.image is None:
        return
    img = plan.image
    if img.suffix.lower() not in IMAGE_TYPES:
        raise ValueError(f"site.plan.image: {img.name}: use a PNG, JPEG or WebP drawing ({', '.join(IMAGE_TYPES)})")
    if not img.is_file():
        raise ValueError(f"site.plan.image: {img} does not exist")
    if img.stat().st_size > MAX_IMAGE_BYTES:
        raise ValueError(f"site.plan.image: {img} is over {MAX_IMAGE_BYTES // 1024**2} MiB")


def jib_length_m(device: Any) -> float | None:
    """A crane's jib as drawn: `jib_length_m`, else the largest radius of its load chart."""
    if device.jib_length_m is not None:
        return float(device.jib_length_m)
    if device.load_chart:
        return float(max(p.radius_m for p in device.load_chart))
    return None


# `folder` below is where an admin's upload is kept: the state file's folder


def plan_meta(plan: SitePlan | None, folder: Path) -> dict[str, Any] | None:
    if plan is None:
        return None
    return {"width_m": plan.width_m, "height_m": plan.height_m, "image": current_image(plan, folder) is not None}


# what the first bytes of each accepted drawing are (an upload is checked by its content, not its name)
_MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"))


def image_kind(data: bytes) -> str | None:
    """The suffix of a PNG, JPEG or WebP image by its content; None for anything else."""
    for magic, suffix in _MAGIC:
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return None


def uploaded_image(folder: Path) -> Path | None:
    """The drawing an admin uploaded (beside the state file), which takes the place of the site file's."""
    found = [folder / f"plan-image{suffix}" for suffix in IMAGE_TYPES if (folder / f"plan-image{suffix}").is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def current_image(plan: SitePlan | None, folder: Path) -> Path | None:
    if plan is None:
        return None
    return uploaded_image(folder) or plan.image


def store_image(plan: SitePlan | None, folder: Path, data: bytes) -> Path:
    """Keep an uploaded drawing (checked: a PNG, JPEG or WebP within MAX_IMAGE_BYTES), atomically; ValueError says
    what is wrong."""
    if plan is None:
        raise ValueError("this site has no site.plan (width_m, height_m) in its site file to put a drawing on")
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"content_b64: the drawing is over {MAX_IMAGE_BYTES // 1024**2} MiB")
    suffix = image_kind(data)
    if suffix is None:
        raise ValueError("content_b64: not a PNG, JPEG or WebP image (an SVG could carry script)")
    target = folder / f"plan-image{suffix}"
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(target)
    for other in IMAGE_TYPES:  # one drawing at a time
        if other != suffix and (folder / f"plan-image{other}").exists():
            (folder / f"plan-image{other}").unlink()
    return target


def plan_image_response(plan: SitePlan | None, folder: Path) -> FileResponse:
    """GET /api/plan/image: the site drawing, an admin's upload before the site file's (404 when there is none)."""
    from fastapi import HTTPException
    from fastapi.responses import FileResponse

    img = current_image(plan, folder)
    if img is None:
        raise HTTPException(404, "this site has no plan drawing (site.plan.image, or an admin's upload)")
    media = IMAGE_TYPES[img.suffix.lower()]
    return FileResponse(img, media_type=media, headers={"Cache-Control": "no-cache"})
