"""The one image every component runs in (built from the repository's Dockerfile)."""

from lowprec_core import __version__

IMAGE = f"ghcr.io/lowprec/lowprec-python:{__version__}"  # the image of this release, tagged by scripts/build-image.sh
