# syntax=docker/dockerfile:1
# Multi-stage build: compile with the pinned toolchain, run as non-root on a
# slim Debian with only CA certificates added.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
RUN cargo build --release --locked --bin mailwarden

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/mailwarden --shell /usr/sbin/nologin mailwarden \
 && mkdir -p /var/lib/mailwarden /etc/mailwarden \
 && chown mailwarden:mailwarden /var/lib/mailwarden
COPY --from=build /src/target/release/mailwarden /usr/local/bin/mailwarden
COPY config/docker.toml /etc/mailwarden/mailwarden.toml
USER mailwarden
VOLUME ["/var/lib/mailwarden"]
# 587 submission (STARTTLS), 465 submissions (TLS), 8080 portal, 9091 metrics.
EXPOSE 587 465 8080 9091
ENV MAILWARDEN_CONFIG=/etc/mailwarden/mailwarden.toml
ENTRYPOINT ["/usr/local/bin/mailwarden"]
CMD ["serve", "--log-format", "json"]
