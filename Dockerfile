# Build stage: release binary with the migrations embedded.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml clippy.toml build.rs ./
COPY src ./src
COPY migrations ./migrations
COPY config ./config
RUN cargo build --release --locked && strip target/release/identity-broker

# Runtime stage: a small image, a non-root user, nothing but the binary and CA roots.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin broker
COPY --from=build /src/target/release/identity-broker /usr/local/bin/identity-broker
COPY config/production.example.toml /etc/identity-broker/config.example.toml
USER 10001
# public (browser, OIDC, broker), internal token API, management (health, metrics)
EXPOSE 8080 8081 9000
ENTRYPOINT ["/usr/local/bin/identity-broker"]
CMD ["start", "--config", "/etc/identity-broker/config.toml"]
