"""The ceiling bench/serve_bench.py measures the service against: an empty FastAPI endpoint.

The same framework, server and workers as the service (uvicorn on httptools, no access log), and
the same request (POST /predict with a trip's JSON body, which it parses), but no validation, no
model, no metrics and no prediction log: it returns a constant. What the service answers below
this rate is its own handling, not HTTP and not the framework.

    python -m uvicorn bench.empty_endpoint:app --workers 2 --no-access-log --http httptools
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

ANSWER = orjson.dumps({"duration_min": 0.0, "model_version": "empty"})

app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(ANSWER, media_type="application/json")


@app.post("/predict_batch")
async def predict_batch(request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(ANSWER, media_type="application/json")
