# The one image every lowprec component runs in.
# Build: docker build -t ghcr.io/lowprec/lowprec-python:0.1.0 .
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lowprec_core ./lowprec_core
COPY components ./components
COPY pipelines ./pipelines
RUN python3 -m venv /opt/lowprec \
 && /opt/lowprec/bin/pip install --no-cache-dir --upgrade pip==26.0.1 \
 && /opt/lowprec/bin/pip install --no-cache-dir .

FROM ${BASE_IMAGE}
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin lowprec
COPY --from=build /opt/lowprec /opt/lowprec
ENV PATH=/opt/lowprec/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOWPREC_HOME=/home/lowprec/.lowprec
USER 10001
WORKDIR /home/lowprec
# KFP sets the command for each component; `lowprec` is there for interactive use.
CMD ["lowprec", "--help"]
