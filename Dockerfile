# consent-ledger service image: `docker build -t consent-ledger .`
#
# Runs `consent-ledger serve`, configured through environment variables (README, "Docker"). The log's signing key
# comes from CONSENT_LEDGER_KEY_FILE: a mounted file of mode 0600 readable by uid 10001 (not the environment, which
# `docker inspect` shows). Listening on 0.0.0.0 needs TLS: mount certificates (`consent-ledger dev-ca` makes a
# throwaway set) and set CONSENT_LEDGER_TLS_CERT/_TLS_KEY (and _TLS_CLIENT_CA for mutual TLS). The health check asks the gRPC health service over the same connection settings
# the CLI uses (CONSENT_LEDGER_CA_CERT, CONSENT_LEDGER_TLS_SERVER_NAME, CONSENT_LEDGER_CLIENT_CERT/_KEY).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY consent_ledger ./consent_ledger
COPY clients/python ./clients/python
# Two distributions: the verifying client with the pure core (clients/python) and the server, which depends on it.
RUN pip install ./clients/python '.[postgres,mysql,otlp]' \
    && rm -rf /src

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/consent-ledger --create-home \
        --shell /usr/sbin/nologin consent-ledger
USER consent-ledger
WORKDIR /var/lib/consent-ledger
VOLUME ["/var/lib/consent-ledger"]

ENV CONSENT_LEDGER_DATABASE_URL=sqlite:////var/lib/consent-ledger/ledger.db \
    CONSENT_LEDGER_LISTEN=0.0.0.0:50051 \
    CONSENT_LEDGER_SERVER=127.0.0.1:50051 \
    CONSENT_LEDGER_TELEMETRY=none
EXPOSE 50051

HEALTHCHECK --interval=30s --timeout=10s --start-period=15s --retries=3 \
    CMD ["consent-ledger", "health"]

ENTRYPOINT ["consent-ledger", "serve"]
