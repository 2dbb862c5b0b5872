"""The files the pipeline writes and the loop reads, one pydantic model each (issue 19, point 3).

Each model owns its file: where it lives (``PATH``, from core/paths.py), how it is written
(atomically, with core/io.py's key-sorted JSON, so the bytes and dvc.lock stay what the dicts
gave) and how it is read (a one-line error naming the file when it is missing or malformed). A
renamed key is then a type error where it is used, not a KeyError in the scheduled loop.

One module per file, each importing only :mod:`core.artifacts.base` and its own parts, so a
stage depends (dvc.yaml) on the models of the files it touches and no more.
"""
