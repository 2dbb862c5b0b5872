"""``python -m serve.client [--url URL] [--token TOKEN]``: call every endpoint once, print the answers.

A starting point for a real client: plain httpx, one keep-alive connection, explicit timeouts.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import httpx
import typer

TRIP: dict[str, Any] = {
    "pu_location_id": 74,  # East Harlem North
    "do_location_id": 168,  # Mott Haven/Port Morris
    "trip_distance": 2.3,
    "pickup_datetime": "2021-01-15T08:30:00",
    "vendor_id": 2,
    "passenger_count": 1,
}
BATCH: list[dict[str, Any]] = [
    TRIP,
    {"pu_location_id": 41, "do_location_id": 42, "trip_distance": 0.9, "pickup_hour": 17.5, "pickup_dow": 4},
    {
        "pu_location_id": 82,
        "do_location_id": 138,
        "trip_distance": 5.1,
        "pickup_datetime": "2021-02-03T23:10:00-05:00",
    },
]


def call_all(url: str, token: str | None = None, out: Any = sys.stdout) -> dict[str, httpx.Response]:
    """One request to each endpoint; returns the responses by name (and prints them to ``out``)."""
    responses: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=url, timeout=httpx.Timeout(10.0, connect=5.0)) as client:
        responses["root"] = client.get("/")
        responses["health"] = client.get("/health")
        responses["predict"] = client.post("/predict", json=TRIP)
        responses["predict_batch"] = client.post("/predict_batch", json={"trips": BATCH})
        responses["model_info"] = client.get("/model/info")
        responses["metrics"] = client.get("/metrics")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        responses["admin_reload"] = client.post("/admin/reload", headers=headers)
    for response in responses.values():
        print(f"{response.request.method} {response.request.url.path} -> {response.status_code}", file=out)
        if response.headers.get("content-type", "").startswith("application/json"):
            print(json.dumps(response.json(), indent=2), file=out)
        else:
            served = [
                line for line in response.text.splitlines() if line.startswith("autoops_predictions_total")
            ]
            print("\n".join(served) or response.text[:200], file=out)
    return responses


def run(
    url: Annotated[str, typer.Option(envvar="AUTOOPS_URL")] = "http://127.0.0.1:8000",
    token: Annotated[str | None, typer.Option(envvar="AUTOOPS_ADMIN_TOKEN", help="for /admin/reload")] = None,
) -> None:
    """Call every endpoint once and print the answers (exit 1 if one failed)."""
    try:
        responses = call_all(url, token)
    except httpx.HTTPError as exc:
        sys.exit(f"error: {url}: {exc}")
    # The admin call may legitimately be refused (no token); everything else must have worked.
    failed = [name for name, r in responses.items() if name != "admin_reload" and r.status_code != 200]
    if failed:
        sys.exit(f"error: {', '.join(failed)} failed")


if __name__ == "__main__":
    typer.run(run)
