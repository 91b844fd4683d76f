# LiteLLM proxy: the front door of a deploykit stack (routes by model name to each vLLM server).
# Built locally from PyPI on the local base image because no container registry is reachable from
# the hosts deploykit targets. Built by deploy_kit/operate/frontdoor.py; build args (all optional,
# never stored in the final image): BASE_IMAGE, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST,
# HTTP(S)_PROXY/NO_PROXY. The context holds this file and ca.crt (the host CA bundle, builder only).
ARG BASE_IMAGE=deploykit/base:bookworm

FROM ${BASE_IMAGE} AS builder
LABEL org.deploykit.stage="builder"
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
COPY ca.crt /build/ca.crt
# uv (PyPI) as in the cpu image: resolves and installs several times faster than pip; the private
# index settings are handed to it the same way. UV_COMPILE_BYTECODE: the .pyc are in the image, as
# pip writes them (the proxy's start imports them).
RUN python3 -m venv /opt/uv /opt/litellm \
 && export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_NO_CACHE=1 UV_LINK_MODE=copy UV_HTTP_TIMEOUT=180 \
    UV_COMPILE_BYTECODE=1 \
 && if [ -s /build/ca.crt ]; then export PIP_CERT=/build/ca.crt SSL_CERT_FILE=/build/ca.crt; fi \
 && if [ -n "${PIP_INDEX_URL:-}" ]; then export UV_DEFAULT_INDEX="$PIP_INDEX_URL"; else unset PIP_INDEX_URL; fi \
 && if [ -n "${PIP_EXTRA_INDEX_URL:-}" ]; then export UV_INDEX="$PIP_EXTRA_INDEX_URL"; else unset PIP_EXTRA_INDEX_URL; fi \
 && if [ -n "${PIP_TRUSTED_HOST:-}" ]; then export UV_INSECURE_HOST="$PIP_TRUSTED_HOST"; else unset PIP_TRUSTED_HOST; fi \
 && /opt/uv/bin/pip install -q "uv==0.13.9" \
 && /opt/uv/bin/uv pip install --python /opt/litellm/bin/python "litellm[proxy]==1.106.2" \
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
