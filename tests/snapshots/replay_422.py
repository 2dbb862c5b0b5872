"""Replays invalid requests through an app built in-process and writes what it answered:
[{path, body, status, answer}], the 422s only. It made serve_422_3743ab5.json from the code before
issues 20 and 22, which tests/test_serve_units.py replays against today's code:

    git archive 3743ab5 | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before python tests/snapshots/replay_422.py tests/snapshots/serve_422_3743ab5.json
"""

import json
import sys
import tempfile
import warnings
from pathlib import Path

from fastapi.testclient import TestClient

from serve.app import create_app
from serve.settings import Settings
from serve.testing import small_model_dir

warnings.filterwarnings("ignore")
T = {
    "pu_location_id": 74,
    "do_location_id": 168,
    "trip_distance": 2.3,
    "pickup_datetime": "2021-01-15T08:30:00",
}
P = {"pu_location_id": 74, "do_location_id": 168, "trip_distance": 2.3, "pickup_hour": 8, "pickup_dow": 1}
bodies = [
    {**T, "pu_location_id": 0},
    {**T, "pu_location_id": "3"},
    {**T, "pu_location_id": True},
    {**T, "trip_distance": "far"},
    {**T, "trip_distance": -1},
    {**T, "trip_distance": None},
    {**T, "pickup_datetime": "2021-13-01T00:00:00"},
    {**T, "pickup_datetime": None},
    {**T, "pickup_datetime": 5},
    {**T, "pickup_datetime": "1999-01-01T00:00:00"},
    {**T, "vendor_id": 4},
    {**T, "passenger_count": 1.5},
    {**T, "surge": 1},
    {k: v for k, v in T.items() if k != "trip_distance"},
    {**T, "pickup_hour": 8},
    {k: v for k, v in T.items() if k != "pickup_datetime"},
    {**P, "pickup_hour": 24},
    {**P, "pickup_dow": 7},
    {**P, "pickup_month": 0},
    [T],
    5,
    "x",
    None,
    {},
    {**T, "pickup_latitude": 40.7},
    {**T, "ratecode_id": 7, "trip_type": 3},
    {**P, "pickup_hour": None},
    {**T, "pickup_longitude": -73.5, "pickup_latitude": 40.3},
    {**T, "do_location_id": 1.5},
]
requests = []
for b in bodies:
    for path, body in (
        ("/predict", b),
        ("/predict_batch", {"trips": [T, b]}),
        ("/predict_batch", {"trips": b}),
    ):
        requests.append((path, json.dumps(body)))
for raw in ("{not json", "", '{"a": NaN}', "[1,", '{"trip_distance": Infinity}'):
    for path in ("/predict", "/predict_batch"):
        requests.append((path, raw))
work = Path(tempfile.mkdtemp())
app = create_app(
    Settings(
        models_dir=small_model_dir(work, seed=3),
        compile="off",
        watch_interval_s=0,
        prediction_log=None,
        max_batch=20,
    )
)
out = []
with TestClient(app) as c:
    for path, body in requests:
        r = c.post(path, content=body.encode(), headers={"content-type": "application/json"})
        out.append({"path": path, "body": body, "status": r.status_code, "answer": r.json()})
Path(sys.argv[1]).write_text(json.dumps([x for x in out if x["status"] != 200], indent=1) + "\n")
