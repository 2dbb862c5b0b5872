"""Auto-Ops pipeline stages: ingest -> featurize -> train -> evaluate -> drift (see dvc.yaml)."""
