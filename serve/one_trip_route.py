"""POST /predict for the common trip, answered as plain ASGI before FastAPI's routing: the hot path.

For one trip, FastAPI's own layers (exception middleware, exit stack, route matching, the request
object and its dependency solving) cost more than validating the trip and running the compiled
trees together (bench/results/serve_request_cost.json, ``single_trip_steps_us``). This layer sits
inside the request checks and the metrics middleware (serve/app.py), so both still see every
request; it reads the body and asks :meth:`serve.service.Service.answer_one` for the answer. Any
body that is not a trip in the common form - an invalid one, coordinates, no model loaded yet, a
body that did not arrive whole - goes on to the route in serve/routes.py with the body replayed,
so every answer other than a plain prediction (every 4xx and 5xx) is the general path's.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.service import Service

PATH = "/predict"
_CONTENT_TYPE = (b"content-type", b"application/json")


class OneTripFastPath:
    def __init__(self, app: ASGIApp, service: Service, route: BaseRoute) -> None:
        self.app = app
        self.service = service
        # Set in the scope as routing would: the metrics middleware labels the request by it.
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = b""
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    break  # the client went away: the route's to handle
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    answer = self.service.answer_one(body)
                    if answer is not None:
                        scope["route"] = self.route
                        await _send_json(send, answer)
                        return
                    break
        except HTTPException as exc:  # the size limit (serve/app.py's limited_receive): the route's to answer
            await self.app(scope, _replay(messages, receive, exc), send)
            return
        await self.app(scope, _replay(messages, receive, None), send)


async def _send_json(send: Send, body: bytes) -> None:
    # The headers serve/routes.py's json_response sends (starlette's Response), in its order.
    headers = [(b"content-length", str(len(body)).encode()), _CONTENT_TYPE]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], receive: Receive, error: Exception | None) -> Receive:
    """``receive`` as the route would have seen it: the messages read here, then what they
    raised, then the rest from the server."""
    pending = iter(messages)

    async def replayed() -> Message:
        message = next(pending, None)
        if message is not None:
            return message
        if error is not None:
            raise error
        return await receive()

    return replayed
