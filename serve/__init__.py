"""The prediction service: FastAPI on uvicorn, serving the model the pipeline trained.

Features come from :mod:`core.features` (the module training uses), the model from ``models/``
(or an MLflow model URI), and every prediction is logged for the drift stage. See serve/README.md.
"""
