# Build stage: release binary with the migrations embedded.
# `.ci/image-build-check` rebuilds this stage's context from its COPY lines and runs its RUN
# lines, offline and without a container engine: a file the build needs but no COPY brings
# in fails CI, not the first `docker build`.
FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, from the manifest alone, so this layer stays cached until Cargo.toml,
# Cargo.lock or build.rs change. Cargo reads every target the manifest declares before it
# builds any (a missing `[[bench]]` file stops even `--bin`), so the benches get stubs too,
# named from Cargo.toml's `[[bench]]` entries.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && for bench in $(sed -n '/^\[\[bench\]\]/,/^name/ s/^name *= *"\(.*\)"$/\1/p' Cargo.toml); do \
           echo 'fn main() {}' > "benches/$bench.rs"; \
       done \
    && cargo build --release --locked

# Then the sources, replacing every stub: the release build needs src (with its
# include_str! files), migrations (sqlx::migrate!) and the real benches (the manifest names
# them; they are not built, but the image builds from the repository's own target set, not
# from stubs). COPY keeps the files' modification times, older than the stub build: touch
# the crate roots or cargo takes the stubs' artifacts for up to date.
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && strip target/release/identity-broker

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
