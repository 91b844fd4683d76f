# LiteLLM proxy: the front door of a deploykit stack (routes by model name to each vLLM server).
# Built locally from PyPI on the local base image because no container registry is reachable from
# the hosts deploykit targets. Built by deploy_kit/operate/frontdoor.py; build args (all optional,
# never stored in the final image): BASE_IMAGE, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST,
# HTTP(S)_PROXY/NO_PROXY. The context holds this file and ca.crt (the host CA bundle, builder only).
ARG BASE_IMAGE=deploykit/base:bookworm

FROM ${BASE_IMAGE} AS builder
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
COPY ca.crt /build/ca.crt
RUN python3 -m venv /opt/litellm \
 && export PIP_CERT=/build/ca.crt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
 && if [ ! -s /build/ca.crt ]; then unset PIP_CERT; fi \
 && if [ -z "${PIP_INDEX_URL:-}" ]; then unset PIP_INDEX_URL; fi \
 && if [ -z "${PIP_EXTRA_INDEX_URL:-}" ]; then unset PIP_EXTRA_INDEX_URL; fi \
 && if [ -z "${PIP_TRUSTED_HOST:-}" ]; then unset PIP_TRUSTED_HOST; fi \
 && /opt/litellm/bin/pip install "litellm[proxy]==1.106.2" \
 && /opt/litellm/bin/litellm --version

FROM ${BASE_IMAGE}
COPY --from=builder /opt/litellm /opt/litellm
# LITELLM_LOCAL_MODEL_COST_MAP: use the bundled cost map instead of fetching it from GitHub at start.
ENV PATH=/opt/litellm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    NO_COLOR=1
LABEL org.deploykit.component="front-door"
ENTRYPOINT ["litellm"]
CMD ["--config", "/app/config.yaml", "--port", "4000"]
