"""``ssehub dev``'s demo: a page where two tabs chat through the real pipeline."""

from __future__ import annotations

import time
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from ssehub.config import Settings
from ssehub.edge.auth import TokenVerifier, mint_token
from ssehub.edge.credentials import extract_token
from ssehub.errors import AuthError, SsehubError
from ssehub.publisher import Publisher
from ssehub.schema import MAX_ID_BYTES

ROOM = "demo-room"
MAX_NAME = 64  # characters, as the sign-in field allows
TOKEN_TTL = 24 * 3600.0  # seconds


class Login(BaseModel):
    user: str  # checked by user_name_problem, in words


class BadUserName(SsehubError):
    """A user name the demo cannot use; the message says why, to a person."""


def user_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a user id (SPEC: 1-128 bytes of printable
    characters, no spaces), in words a person at the sign-in form understands;
    None when it can."""
    if not name:
        return "type a user name first"
    if any(ch.isspace() for ch in name):
        return f"a user name cannot contain spaces (try {'_'.join(name.split())!r})"
    if not all(ch.isprintable() for ch in name):
        return "a user name cannot contain control characters"
    if len(name) > MAX_NAME or len(name.encode()) > MAX_ID_BYTES:
        return f"a user name is at most {MAX_NAME} characters (fewer outside ASCII)"
    return None


class Send(BaseModel):
    to: str = Field(pattern="^(user|conversation)$")
    target: str = Field(min_length=1, max_length=128)
    text: str = Field(max_length=4000)


class Typing(BaseModel):
    conversation: str = ROOM


def add_demo_routes(app: FastAPI, settings: Settings, publisher: Publisher) -> None:
    verifier = TokenVerifier(settings)
    page = resources.files("ssehub.edge").joinpath("static/index.html").read_text()

    def sender(request: Request) -> str:
        token = extract_token(None, request.headers.get("authorization"), None)
        return verifier.verify(token).user_id

    @app.exception_handler(SsehubError)
    async def _refuse(_request: Request, exc: SsehubError) -> JSONResponse:
        if isinstance(exc, AuthError):
            return JSONResponse({"error": exc.code, "message": exc.message}, status_code=401)
        error = "bad_user_name" if isinstance(exc, BadUserName) else "bad_request"
        return JSONResponse({"error": error, "message": str(exc)}, status_code=400)

    # HEAD as well as GET, like any static page (FastAPI adds no HEAD by itself)
    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.post("/demo/login")
    async def login(body: Login, request: Request) -> JSONResponse:
        if problem := user_name_problem(body.user):
            raise BadUserName(problem[0].upper() + problem[1:] + ".")
        await publisher.add_members(ROOM, [body.user])
        ttl = min(TOKEN_TTL, settings.max_token_lifetime)  # a day, or less where the edge says
        token = mint_token(settings, body.user, ttl)
        answer = {"token": token, "user": body.user, "conversation": ROOM}
        response = JSONResponse(answer | {"queryTokens": settings.query_tokens})
        if settings.jwt_cookie:
            # The stream's token when URLs may not carry one (SSEHUB_QUERY_TOKENS=false):
            # sent by the browser to /sse/connect only, never to another site's page.
            response.set_cookie(
                settings.jwt_cookie,
                token,
                max_age=int(ttl),
                path="/sse",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    @app.post("/demo/send")
    async def send(body: Send, request: Request) -> dict[str, bool]:
        me = sender(request)
        if body.to == "user" and (problem := user_name_problem(body.target)):
            raise BadUserName(f"Cannot send to {body.target!r}: {problem}.")
        data = {
            "from": me,
            "text": body.text,
            "conversationId": body.target if body.to == "conversation" else None,
            "sentAt": int(time.time() * 1000),
        }
        if body.to == "user":
            await publisher.send_event_to_user(body.target, "message:new", data)
        else:
            await publisher.broadcast_to_conversation(
                body.target, "message:new", data, exclude=[me]
            )
        return {"ok": True}

    @app.post("/demo/typing")
    async def typing(body: Typing, request: Request) -> dict[str, bool]:
        me = sender(request)
        await publisher.broadcast_to_conversation(
            body.conversation,
            "user:typing",
            {"userId": me, "conversationId": body.conversation},
            exclude=[me],
            ephemeral=True,
        )
        return {"ok": True}
