FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
COPY --from=build /src/target/release/graphq /usr/local/bin/graphq
ENTRYPOINT []
CMD ["graphq", "worker"]
