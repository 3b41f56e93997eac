"""Plugins and adapters for the real model families the tests and benchmarks use: metric
plugins written as a user would write them (`--metric examples.ocr_metric:exact_match`), and
exporters and scorers for MiniLM, Magika, silero VAD and PP-OCR. Not part of the package."""
