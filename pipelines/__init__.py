"""Pipelines: @dsl.pipeline wiring only, each with its compiled YAML beside it."""
