# Build stage: a release binary.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin weir

# Runtime stage: the binary and an example config, nothing else.
FROM debian:bookworm-slim
COPY --from=build /src/target/release/weir /usr/local/bin/weir
COPY config/minimal.toml /etc/weir/weir.toml
EXPOSE 8080
USER nobody
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["--config", "/etc/weir/weir.toml"]
