"""The one image every component runs in (built from the repository's Dockerfile)."""

IMAGE = "ghcr.io/lowprec/lowprec-python:0.1.0"
