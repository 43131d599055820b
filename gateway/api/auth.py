"""Routes of logging in and out: a bearer token for scripts, an HttpOnly session cookie for the console."""

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from gateway.api.bodies import LoginBody
from gateway.api.deps import COOKIE, Viewer, session_token
from gateway.auth import AuthError
from gateway.parts import GatewayParts


def router(gw: GatewayParts) -> APIRouter:
    r = APIRouter()

    @r.post("/api/login")
    async def login(body: LoginBody, request: Request, response: Response) -> dict[str, Any]:
        source = request.client.host if request.client else "-"
        try:
            token, user, expires = await gw.auth.alogin(body.username, body.password, source)
        except AuthError as err:
            raise HTTPException(401, str(err)) from None
        max_age = int((expires - gw.alarms.clock()) / 1e9)
        response.set_cookie(COOKIE, token, max_age=max_age, httponly=True, samesite="strict")
        return {"token": token, "user": user.name, "role": user.role.name.lower(), "expires_ns": expires}

    @r.post("/api/logout")
    async def logout(request: Request, response: Response, user: Viewer) -> dict[str, str]:
        token = session_token(request)
        if token:
            gw.auth.logout(token)
        response.delete_cookie(COOKIE)
        return {"user": user.name, "status": "logged out"}

    @r.get("/api/me")
    async def me(user: Viewer) -> dict[str, str]:
        return {"user": user.name, "role": user.role.name.lower(), "display_name": user.display_name}

    return r
