# syntax=docker/dockerfile:1
# Multi-stage build: compile with the pinned toolchain, run as non-root on a
# slim Debian with only CA certificates added.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY benches ./benches
RUN cargo build --release --locked --bin mailwarden

FROM debian:bookworm-slim
# CA certificates track Debian's security updates; pinning would freeze them.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home /var/lib/mailwarden --shell /usr/sbin/nologin mailwarden \
 && mkdir -p /var/lib/mailwarden /etc/mailwarden \
 && chown mailwarden:mailwarden /var/lib/mailwarden
COPY --from=build /src/target/release/mailwarden /usr/local/bin/mailwarden
COPY config/docker.toml /etc/mailwarden/mailwarden.toml
USER 10001:10001
VOLUME ["/var/lib/mailwarden"]
# 587 submission (STARTTLS), 465 submissions (TLS), 8080 portal, 9091 metrics.
EXPOSE 587 465 8080 9091
ENV MAILWARDEN_CONFIG=/etc/mailwarden/mailwarden.toml
# /healthz on the metrics listener answers 200 while the process serves HTTP
# (it does not read the store: /readyz says whether the store takes writes).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9091 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q ' 200 ' <&3"]
ENTRYPOINT ["/usr/local/bin/mailwarden"]
CMD ["serve", "--log-format", "json"]
