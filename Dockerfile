# The one image every lowprec component runs in.
#
# It installs wheels only, from build/wheels/ (scripts/build-image.sh downloads them, pinned by
# requirements.lock, with lowprec's own wheel), so the build needs no network and no compiler:
#   scripts/build-image.sh            # podman/buildah, no Docker engine needed
#   docker build -t IMAGE .           # after the same `pip download` step, where a daemon runs
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
COPY requirements.lock /tmp/requirements.lock
COPY build/wheels/ /tmp/wheels/
RUN python3 -m venv /opt/lowprec \
 && /opt/lowprec/bin/python -m pip install --no-cache-dir --no-index --find-links /tmp/wheels --only-binary :all: \
        --requirement /tmp/requirements.lock \
 && /opt/lowprec/bin/python -m pip install --no-cache-dir --no-index --find-links /tmp/wheels --no-deps /tmp/wheels/lowprec-*.whl \
 && /opt/lowprec/bin/python -m pip check \
 && /opt/lowprec/bin/lowprec --help >/dev/null \
 && /opt/lowprec/bin/python -m pip uninstall --yes --quiet pip setuptools

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="lowprec" \
      org.opencontainers.image.description="Post-training INT8 quantization of ONNX models, as Kubeflow Pipelines steps" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/lowprec /opt/lowprec
# A numeric non-root user: runAsNonRoot clusters can verify it without an /etc/passwd entry.
RUN mkdir -p /home/lowprec && chown 10001:10001 /home/lowprec
# PYTHONSAFEPATH: `python3 -m kfp.dsl.executor_main` does not put the working directory first on
# sys.path, so no module in it can shadow an installed one.
ENV PATH=/opt/lowprec/bin:$PATH \
    HOME=/home/lowprec \
    PYTHONUNBUFFERED=1 \
    PYTHONSAFEPATH=1 \
    LOWPREC_HOME=/home/lowprec/.lowprec
USER 10001:10001
WORKDIR /home/lowprec
# KFP sets the command for each component; `lowprec` is there for interactive use.
CMD ["lowprec", "--help"]
