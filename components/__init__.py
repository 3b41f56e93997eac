"""Kubeflow components: thin lightweight-Python wrappers, one per lowprec_core operation.

They are lightweight components with ``base_image`` set to the project image, because
kfp's local SubprocessRunner refuses containerized ones. S3 URIs travel as strings and
each component does its own I/O through lowprec_core (endpoint from AWS_ENDPOINT_URL_S3).
"""

from .benchmark import benchmark
from .calibrate import calibrate
from .fleet import list_pending
from .publish import publish
from .quantize import quantize
from .report import report
from .validate import validate

__all__ = ["benchmark", "calibrate", "list_pending", "publish", "quantize", "report", "validate"]
